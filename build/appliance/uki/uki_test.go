package uki_test

import (
	"bytes"
	"debug/pe"
	"os"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/build/appliance/uki"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// The pinned stub with every section a UKI carries: each is where its
// header says, holds its bytes, does not overlap another in memory, and the
// image's size covers them; the same inputs give the same bytes.
func TestAssemble(t *testing.T) {
	stub, err := os.ReadFile(runfile.Path(t, "UKI_STUB"))
	if err != nil {
		t.Fatal(err)
	}
	sections := []uki.Section{
		{Name: ".osrel", Data: []byte("ID=appliance\n")},
		{Name: ".cmdline", Data: []byte("console=ttyS0 appliance.verity=abc")},
		{Name: ".initrd", Data: bytes.Repeat([]byte{7}, 70001)},
		{Name: ".linux", Data: bytes.Repeat([]byte{9}, 4097), VirtualSize: 1 << 20},
	}
	out, err := uki.Assemble(stub, sections)
	if err != nil {
		t.Fatal(err)
	}
	again, err := uki.Assemble(stub, sections)
	if err != nil || !bytes.Equal(out, again) {
		t.Fatalf("a second assembly differs (%v)", err)
	}
	f, err := pe.NewFile(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("the image is not a PE file: %v", err)
	}
	orig, err := pe.NewFile(bytes.NewReader(stub))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Sections) != len(orig.Sections)+len(sections) {
		t.Fatalf("%d sections, want %d", len(f.Sections), len(orig.Sections)+len(sections))
	}
	for _, want := range sections {
		s := f.Section(want.Name)
		if s == nil {
			t.Errorf("no section %s", want.Name)
			continue
		}
		data, err := s.Data()
		if err != nil || !bytes.Equal(data[:len(want.Data)], want.Data) {
			t.Errorf("section %s: its bytes differ (%v)", want.Name, err)
		}
		if s.VirtualSize != max(want.VirtualSize, uint32(len(want.Data))) {
			t.Errorf("section %s: virtual size %d", want.Name, s.VirtualSize)
		}
	}
	oh := f.OptionalHeader.(*pe.OptionalHeader64)
	var end uint32
	for i, s := range f.Sections {
		if s.VirtualAddress%oh.SectionAlignment != 0 || s.VirtualAddress < end {
			t.Errorf("section %s at %#x: unaligned or overlapping the one before (ends %#x)", s.Name, s.VirtualAddress, end)
		}
		if i < len(orig.Sections) && s.SectionHeader != orig.Sections[i].SectionHeader {
			t.Errorf("the stub's section %s changed", s.Name)
		}
		end = s.VirtualAddress + max(s.VirtualSize, s.Size)
	}
	if oh.SizeOfImage < end || oh.SizeOfImage%oh.SectionAlignment != 0 {
		t.Errorf("SizeOfImage %#x does not cover the sections (end %#x)", oh.SizeOfImage, end)
	}
	if f.FileHeader.TimeDateStamp != orig.FileHeader.TimeDateStamp {
		t.Errorf("the time stamp changed")
	}
	if got, err := uki.Cmdline(out); err != nil || got != string(sections[1].Data) {
		t.Errorf("Cmdline = %q, %v; want %q", got, err, sections[1].Data)
	}
	if _, err := uki.Cmdline(stub); err == nil {
		t.Error("Cmdline of the bare stub: no error")
	}
	// Its command line names no system image, its os-release no version.
	if _, _, err := uki.System(out); err == nil || !strings.Contains(err.Error(), "names no system image") {
		t.Errorf("System of a UKI without a system: %v", err)
	}
	if _, err := uki.Version(out); err == nil || !strings.Contains(err.Error(), "IMAGE_VERSION") {
		t.Errorf("Version of a UKI without IMAGE_VERSION: %v", err)
	}
}

// What the stub cannot take is refused, naming why.
func TestAssembleRefuses(t *testing.T) {
	stub, err := os.ReadFile(runfile.Path(t, "UKI_STUB"))
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		stub     []byte
		sections []uki.Section
		want     string
	}{
		"not PE":    {[]byte("MZ nothing"), nil, "not a PE image"},
		"long name": {stub, []uki.Section{{Name: ".toolongname"}}, "must be 1 to 8 bytes"},
		"twice":     {stub, []uki.Section{{Name: ".sbat"}}, "already has a section .sbat"},
		"too many":  {stub, make([]uki.Section, 1000), "room for"},
	} {
		_, err := uki.Assemble(tc.stub, tc.sections)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v; want %q", name, err, tc.want)
		}
	}
}
