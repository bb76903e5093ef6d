package systemimage

import (
	"strings"
	"testing"
)

const hash = "0123456789abcdef0123456789abcdeffedcba9876543210fedcba9876543210"

func TestKernelArgsRoundTrip(t *testing.T) {
	in := Info{RootHash: hash, HashOffset: 8192, Size: 16384}
	args := append([]string{"console=ttyS0"}, in.KernelArgs()...)
	got, ok, err := FromKernelArgs(args)
	if err != nil || !ok || got.RootHash != in.RootHash || got.HashOffset != in.HashOffset {
		t.Errorf("FromKernelArgs(%q) = %+v, %v, %v", args, got, ok, err)
	}
	if _, ok, err := FromKernelArgs([]string{"console=ttyS0"}); ok || err != nil {
		t.Errorf("a command line without a system: %v, %v; want none, no error", ok, err)
	}
}

func TestFromKernelArgsRefusesHalfOrMalformed(t *testing.T) {
	for _, args := range [][]string{
		{ArgRootHash + "=" + hash},
		{ArgHashOffset + "=4096"},
		{ArgRootHash + "=abc", ArgHashOffset + "=4096"},
		{ArgRootHash + "=" + hash, ArgHashOffset + "=4095"},
		{ArgRootHash + "=" + hash, ArgHashOffset + "=0"},
	} {
		if _, ok, err := FromKernelArgs(args); !ok || err == nil || !strings.Contains(err.Error(), "appliance.system.") {
			t.Errorf("FromKernelArgs(%q): %v, %v; want an error naming the argument", args, ok, err)
		}
	}
}

func TestPartitionGUIDIsTheRootHashsFirstHalf(t *testing.T) {
	got, err := PartitionGUID(hash)
	if err != nil || got != "01234567-89ab-cdef-0123-456789abcdef" {
		t.Errorf("PartitionGUID = %s, %v", got, err)
	}
	if _, err := PartitionGUID("01"); err == nil {
		t.Error("a short root hash gives a GUID")
	}
}
