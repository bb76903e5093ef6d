// Package uki assembles a Unified Kernel Image: systemd's UEFI stub
// (linuxx64.efi.stub) with the kernel, the initramfs, the command line and
// the os-release added as PE sections (.linux, .initrd, .cmdline, .osrel,
// .uname), as the UAPI group's UKI specification lays them out. The stub
// finds them by name at boot.
//
// It is written here, about a hundred lines, because neither tool that
// does it is fit for a hermetic, reproducible build action: systemd's
// ukify needs Python modules the toolchain root lacks, and objcopy would be
// an undeclared host tool. No Go library writes PE sections. The output
// depends on the inputs only (no timestamp is written; the stub's is kept).
//
// It must not sign anything: Secure Boot signing, when it comes, signs the
// assembled image.
package uki

import (
	"bytes"
	"debug/pe"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/appliance-bundler/appliance/core/systemimage"
	"github.com/appliance-bundler/appliance/core/updatepayload"
)

// Section is one section to add.
type Section struct {
	// Name is the PE section name, at most 8 bytes (".linux").
	Name string
	Data []byte
	// VirtualSize, when larger than len(Data), is the size the section
	// takes in memory (the rest is zero).
	VirtualSize uint32
}

// Section characteristics of an added section: initialised, read-only data.
const sectionFlags = pe.IMAGE_SCN_CNT_INITIALIZED_DATA | pe.IMAGE_SCN_MEM_READ

// Sizes of the PE structures this package writes, from the PE/COFF
// specification.
const (
	sectionHeaderSize = 40
	coffHeaderSize    = 20
	// Offsets in the PE32+ optional header.
	optSizeOfImage = 56
	optCheckSum    = 64
)

// Assemble returns stub with sections appended, in the order given, each
// at the next section-aligned address after the stub's last section.
func Assemble(stub []byte, sections []Section) ([]byte, error) {
	f, err := pe.NewFile(bytes.NewReader(stub))
	if err != nil {
		return nil, fmt.Errorf("the stub is not a PE image: %w", err)
	}
	oh, ok := f.OptionalHeader.(*pe.OptionalHeader64)
	if !ok {
		return nil, errors.New("the stub is not a PE32+ image")
	}
	peOff := int(binary.LittleEndian.Uint32(stub[0x3c:]))
	optOff := peOff + 4 + coffHeaderSize
	tableEnd := optOff + int(f.FileHeader.SizeOfOptionalHeader) + len(f.Sections)*sectionHeaderSize
	if room := int(oh.SizeOfHeaders) - tableEnd; room < len(sections)*sectionHeaderSize {
		return nil, fmt.Errorf("the stub's headers have room for %d more sections, not %d", room/sectionHeaderSize, len(sections))
	}

	if !allZero(stub[tableEnd:oh.SizeOfHeaders]) {
		return nil, errors.New("the stub has data after its section table")
	}
	// A signature covers the image it was made for, and sits at the end of
	// the file where the sections go.
	if len(oh.DataDirectory) > pe.IMAGE_DIRECTORY_ENTRY_SECURITY && oh.DataDirectory[pe.IMAGE_DIRECTORY_ENTRY_SECURITY].Size != 0 {
		return nil, errors.New("the stub is signed: assemble an unsigned stub, then sign the image")
	}

	out := bytes.Clone(stub)
	va := nextVA(f, oh.SectionAlignment)
	for i, s := range sections {
		if len(s.Name) == 0 || len(s.Name) > 8 {
			return nil, fmt.Errorf("section name %q: must be 1 to 8 bytes", s.Name)
		}
		if f.Section(s.Name) != nil {
			return nil, fmt.Errorf("the stub already has a section %s", s.Name)
		}
		raw := align(uint32(len(out)), oh.FileAlignment)
		out = append(out, make([]byte, int(raw)-len(out))...)
		out = append(out, s.Data...)
		size := align(uint32(len(s.Data)), oh.FileAlignment)
		out = append(out, make([]byte, int(size)-len(s.Data))...)
		vsize := max(s.VirtualSize, uint32(len(s.Data)))

		h := out[tableEnd+i*sectionHeaderSize:][:sectionHeaderSize]
		copy(h[0:8], s.Name)
		binary.LittleEndian.PutUint32(h[8:], vsize)
		binary.LittleEndian.PutUint32(h[12:], va)
		binary.LittleEndian.PutUint32(h[16:], size)
		binary.LittleEndian.PutUint32(h[20:], raw)
		binary.LittleEndian.PutUint32(h[36:], sectionFlags)
		va = align(va+vsize, oh.SectionAlignment)
	}
	binary.LittleEndian.PutUint16(out[peOff+4+2:], uint16(len(f.Sections)+len(sections)))
	binary.LittleEndian.PutUint32(out[optOff+optSizeOfImage:], va)
	binary.LittleEndian.PutUint32(out[optOff+optCheckSum:], 0)
	binary.LittleEndian.PutUint32(out[optOff+optCheckSum:], checksum(out, optOff+optCheckSum))
	return out, nil
}

// nextVA is the first section-aligned address after every section.
func nextVA(f *pe.File, alignment uint32) uint32 {
	var end uint32
	for _, s := range f.Sections {
		end = max(end, s.VirtualAddress+max(s.VirtualSize, s.Size))
	}
	return align(end, alignment)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func align(n, a uint32) uint32 { return (n + a - 1) / a * a }

// checksum is the PE image checksum (the algorithm of Windows' imagehlp
// CheckSumMappedFile): 16-bit one's-complement sum of the file, skipping
// the checksum field, plus the file's length. UEFI firmware does not check
// it; it is set so that tools that do see a consistent image.
func checksum(b []byte, field int) uint32 {
	var sum uint64
	for i := 0; i+1 < len(b); i += 2 {
		if i == field || i == field+2 {
			continue
		}
		sum += uint64(binary.LittleEndian.Uint16(b[i:]))
		sum = (sum & 0xffff) + (sum >> 16)
	}
	if len(b)%2 == 1 {
		sum += uint64(b[len(b)-1])
		sum = (sum & 0xffff) + (sum >> 16)
	}
	return uint32(sum&0xffff) + uint32(len(b))
}

// Cmdline is the kernel command line of the UKI efi (its .cmdline
// section, without the zero padding): what the release and the tests read
// to learn which system a UKI boots.
func Cmdline(efi []byte) (string, error) {
	b, err := section(efi, ".cmdline")
	return string(b), err
}

// System is the system image the UKI efi boots: the core/systemimage
// arguments of its command line, and the command line. A command line
// that names no system image is an error.
func System(efi []byte) (systemimage.Info, string, error) {
	cmdline, err := Cmdline(efi)
	if err != nil {
		return systemimage.Info{}, "", err
	}
	info, ok, err := systemimage.FromKernelArgs(strings.Fields(cmdline))
	if err == nil && !ok {
		err = errors.New("names no system image")
	}
	if err != nil {
		return info, cmdline, fmt.Errorf("its command line %q: %w", cmdline, err)
	}
	return info, cmdline, nil
}

// Version is the version of the system the UKI efi boots: its .osrel
// section's (core/updatepayload.OSReleaseVersion), by which systemd-boot
// orders the boot entries and mkdisk and mkupdate name them.
func Version(efi []byte) (string, error) {
	b, err := section(efi, ".osrel")
	if err != nil {
		return "", err
	}
	return updatepayload.OSReleaseVersion(b)
}

// section is the named section's data without its zero padding.
func section(efi []byte, name string) ([]byte, error) {
	f, err := pe.NewFile(bytes.NewReader(efi))
	if err != nil {
		return nil, fmt.Errorf("not a PE image: %w", err)
	}
	s := f.Section(name)
	if s == nil {
		return nil, fmt.Errorf("the UKI has no %s section", name)
	}
	b, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", name, err)
	}
	return bytes.TrimRight(b[:min(len(b), int(s.VirtualSize))], "\x00"), nil
}
