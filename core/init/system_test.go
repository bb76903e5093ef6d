package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// fakeSys lays out /sys/block as the kernel does for a disk and its
// partitions: <disk>/<part>/partition holding the number.
func fakeSys(t *testing.T, disk string, parts int) string {
	t.Helper()
	sys := t.TempDir()
	for n := 1; n <= parts; n++ {
		d := filepath.Join(sys, disk, disk+string(rune('0'+n)))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "partition"), []byte{byte('0' + n), '\n'}, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return sys
}

// gptDisk writes a real GPT disk image at dev with two partitions, the
// second with GUID guid.
func gptDisk(t *testing.T, dev, guid string) {
	t.Helper()
	d, err := diskfs.Create(dev, 8<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 4095, Type: gpt.LinuxFilesystem, Name: "one", GUID: "11111111-2222-3333-4444-555555555555"},
		{Index: 2, Start: 4096, End: 8191, Type: gpt.LinuxFilesystem, Name: "system-a", GUID: guid},
	}}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
}

func TestFindPartitionByGUID(t *testing.T) {
	const guid = "01234567-89ab-cdef-0123-456789abcdef"
	sys, dev := fakeSys(t, "vda", 2), t.TempDir()
	gptDisk(t, filepath.Join(dev, "vda"), guid)
	// A loop device is not read: its node does not even exist here.
	os.MkdirAll(filepath.Join(sys, "loop0"), 0o755)
	got, disk, err := findPartition(context.Background(), sys, dev, strings.ToUpper(guid))
	if err != nil || got != filepath.Join(dev, "vda2") || disk != filepath.Join(dev, "vda") {
		t.Errorf("findPartition = %q, %q, %v; want %s on %s", got, disk, err, filepath.Join(dev, "vda2"), filepath.Join(dev, "vda"))
	}
}

// The partition in the table before the kernel made its device: found once
// the device is there.
func TestFindPartitionWaitsForTheKernel(t *testing.T) {
	const guid = "01234567-89ab-cdef-0123-456789abcdef"
	sys, dev := fakeSys(t, "vda", 1), t.TempDir()
	gptDisk(t, filepath.Join(dev, "vda"), guid)
	if got, _, err := partitionByGUID(sys, dev, guid); got != "" || err != nil {
		t.Fatalf("before the device: %q, %v", got, err)
	}
	d := filepath.Join(sys, "vda", "vda2")
	os.MkdirAll(d, 0o755)
	os.WriteFile(filepath.Join(d, "partition"), []byte("2\n"), 0o644)
	if got, _, err := partitionByGUID(sys, dev, guid); got != filepath.Join(dev, "vda2") || err != nil {
		t.Errorf("after: %q, %v", got, err)
	}
}

func TestFindPartitionNamesTheDisksItRead(t *testing.T) {
	sys, dev := fakeSys(t, "vda", 2), t.TempDir()
	gptDisk(t, filepath.Join(dev, "vda"), "01234567-89ab-cdef-0123-456789abcdef")
	_, seen, err := partitionByGUID(sys, dev, "ffffffff-89ab-cdef-0123-456789abcdef")
	if err != nil || len(seen) != 1 || seen[0] != "vda" {
		t.Errorf("partitionByGUID of an absent GUID: seen %q, %v", seen, err)
	}
}
