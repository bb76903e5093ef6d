// Package disk writes the appliance's disk image in the layout of
// core/disklayout: a GPT, an EFI system partition (FAT32) holding
// systemd-boot, its configuration and the Unified Kernel Image of slot A's
// system as a committed boot entry, system slot A holding the system image and an empty
// slot B of the same size. The data partition is not in the image: init
// makes it at first boot.
//
// The image is reproducible: its GUIDs derive from a seed (the system's
// root hash), the FAT volume serial is 0 (go-diskfs' reproducible mode) and
// every FAT time stamp is SOURCE_DATE_EPOCH, which the caller must set.
// It must not read anything but its inputs.
package disk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	dfs "github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/appliance-bundler/appliance/core/disklayout"
	"github.com/appliance-bundler/appliance/core/systemimage"
)

// MinESPSize is the smallest ESP written: FAT32 needs 65525 clusters (of
// 512 bytes at this size) to be FAT32 to every reader.
const MinESPSize = 64 << 20

// Spec is what goes on the disk.
type Spec struct {
	// UKI is the Unified Kernel Image's path.
	UKI string
	// Version is the system's version: it names the UKI's boot entry.
	Version string
	// Loader is systemd-boot's path.
	Loader string
	// System is the system image's path (EROFS and its hash tree); empty
	// leaves slot A empty.
	System string
	// SystemRootHash is System's dm-verity root hash, recorded in the
	// layout.
	SystemRootHash string
	// SystemSize is the size of each system slot; zero gives System's size
	// and a quarter more.
	SystemSize int64
	// ESPSize is the ESP's size; zero fits two UKIs of this size (A and B)
	// with room to spare.
	ESPSize int64
	// Seed derives the GUIDs (see disklayout.GUID).
	Seed string
}

// Write writes the image at out, which must not exist, and returns its
// layout.
func Write(spec Spec, out string) (*disklayout.Layout, error) {
	if os.Getenv("SOURCE_DATE_EPOCH") == "" {
		return nil, errors.New("SOURCE_DATE_EPOCH is not set: the ESP's time stamps would be the time of the build")
	}
	if spec.Seed == "" {
		return nil, errors.New("no seed for the disk's GUIDs")
	}
	if spec.Loader == "" {
		return nil, errors.New("no boot loader (systemd-boot)")
	}
	if spec.Version == "" {
		return nil, errors.New("no version for the UKI's boot entry")
	}
	layout, err := plan(spec)
	if err != nil {
		return nil, err
	}
	d, err := diskfs.Create(out, layout.Size, disklayout.SectorSize)
	if err != nil {
		return nil, fmt.Errorf("failed to create %s: %w", out, err)
	}
	err = partition(d, layout, spec)
	if cerr := d.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("failed to write %s: %w", out, cerr)
	}
	if err != nil {
		return nil, err
	}
	if spec.System != "" {
		if err := writeSystem(out, layout.Partitions[1].Offset, spec.System); err != nil {
			return nil, err
		}
	}
	return layout, nil
}

// partition writes the partition table and the ESP.
func partition(d *dfs.Disk, layout *disklayout.Layout, spec Spec) error {
	table := &gpt.Table{GUID: layout.DiskGUID, ProtectiveMBR: true, LogicalSectorSize: disklayout.SectorSize, PhysicalSectorSize: disklayout.SectorSize}
	for i, p := range layout.Partitions {
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: i + 1, Start: uint64(p.Offset / disklayout.SectorSize), Size: uint64(p.Size),
			Type: gpt.Type(p.Type), Name: p.Name, GUID: p.GUID,
		})
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("failed to write the partition table: %w", err)
	}
	return writeESP(d, spec)
}

// plan sizes and places the partitions.
func plan(spec Spec) (*disklayout.Layout, error) {
	uki, err := os.Stat(spec.UKI)
	if err != nil {
		return nil, fmt.Errorf("the UKI: %w", err)
	}
	espSize := spec.ESPSize
	if espSize == 0 {
		espSize = max(MinESPSize, disklayout.Align(2*uki.Size()+16<<20))
	}
	if espSize < MinESPSize || espSize%disklayout.Alignment != 0 || espSize < uki.Size()+1<<20 {
		return nil, fmt.Errorf("ESP size %d: must be a multiple of 1 MiB, at least %d and 1 MiB more than the UKI (%d bytes)", espSize, MinESPSize, uki.Size())
	}
	systemSize := spec.SystemSize
	if spec.System != "" {
		fi, err := os.Stat(spec.System)
		if err != nil {
			return nil, fmt.Errorf("the system image: %w", err)
		}
		if systemSize == 0 {
			// A quarter more: slot B takes the next release, which may
			// be larger.
			systemSize = disklayout.Align(fi.Size() + fi.Size()/4)
		}
		if fi.Size() > systemSize {
			return nil, fmt.Errorf("the system image %s is %d bytes, more than its slot's %d", spec.System, fi.Size(), systemSize)
		}
	}
	if systemSize <= 0 || systemSize%disklayout.Alignment != 0 {
		return nil, fmt.Errorf("system slot size %d: must be a positive multiple of 1 MiB", systemSize)
	}
	l := &disklayout.Layout{DiskGUID: disklayout.GUID(spec.Seed, "disk"), SystemRootHash: spec.SystemRootHash}
	offset := int64(disklayout.Alignment) // the protective MBR and the primary GPT
	// Slot A holding a system is named by its root hash, so that the
	// system's UKI finds it (core/systemimage); an empty slot by the seed.
	systemA := disklayout.GUID(spec.Seed, disklayout.SystemA)
	if spec.SystemRootHash != "" {
		if systemA, err = systemimage.PartitionGUID(spec.SystemRootHash); err != nil {
			return nil, fmt.Errorf("the system image %s: %w", spec.System, err)
		}
	}
	for _, p := range []struct {
		name, typ, guid string
		size            int64
	}{
		{disklayout.ESP, disklayout.TypeESP, disklayout.GUID(spec.Seed, disklayout.ESP), espSize},
		{disklayout.SystemA, disklayout.TypeSystem, systemA, systemSize},
		{disklayout.SystemB, disklayout.TypeSystem, disklayout.GUID(spec.Seed, disklayout.SystemB), systemSize},
	} {
		l.Partitions = append(l.Partitions, disklayout.Partition{
			Name: p.name, Type: p.typ, GUID: p.guid, Offset: offset, Size: p.size,
		})
		offset += p.size
	}
	// The backup GPT, in an aligned tail of its own.
	l.Size = offset + disklayout.Alignment
	return l, nil
}

// writeESP makes the FAT32 file system of partition 1: systemd-boot at
// the removable-media boot path, its configuration, and the UKI as the
// committed boot entry of spec.Version.
func writeESP(d *dfs.Disk, spec Spec) error {
	fs, err := d.CreateFilesystem(dfs.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: "ESP", Reproducible: true})
	if err != nil {
		return fmt.Errorf("failed to make the ESP's file system: %w", err)
	}
	entry := path.Join(disklayout.EntryDir, disklayout.Entry{Version: spec.Version}.Name())
	for _, f := range []struct {
		dst  string
		src  string
		data string
	}{
		{dst: disklayout.LoaderPath, src: spec.Loader},
		{dst: disklayout.LoaderConfPath, data: disklayout.LoaderConf},
		{dst: entry, src: spec.UKI},
	} {
		if err := fs.Mkdir(path.Dir(f.dst)); err != nil {
			return fmt.Errorf("failed to make %s on the ESP: %w", path.Dir(f.dst), err)
		}
		var r io.Reader = strings.NewReader(f.data)
		if f.src != "" {
			src, err := os.Open(f.src)
			if err != nil {
				return err
			}
			defer src.Close()
			r = src
		}
		if err := writeFile(fs, f.dst, r); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(fs filesystem.FileSystem, name string, r io.Reader) error {
	dst, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("failed to create %s on the ESP: %w", name, err)
	}
	if _, err := io.Copy(dst, r); err != nil {
		dst.Close()
		return fmt.Errorf("failed to write %s on the ESP: %w", name, err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("failed to write %s on the ESP: %w", name, err)
	}
	return nil
}

// writeSystem copies the system image into slot A at offset. It writes
// with a large buffer of its own: go-diskfs writes partition contents a
// sector at a time.
func writeSystem(out string, offset int64, system string) error {
	src, err := os.Open(system)
	if err != nil {
		return fmt.Errorf("the system image: %w", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(out, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", out, err)
	}
	if _, err := io.CopyBuffer(io.NewOffsetWriter(dst, offset), src, make([]byte, 4<<20)); err != nil {
		dst.Close()
		return fmt.Errorf("failed to write %s to slot A of %s: %w", system, out, err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", out, err)
	}
	return nil
}
