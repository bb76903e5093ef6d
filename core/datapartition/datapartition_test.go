package datapartition

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/appliance-bundler/appliance/core/disklayout"
)

const imageEnd = 40 << 20 // the system slots end here

// image writes a disk image laid out as the build's: three partitions up
// to imageEnd and a 1 MiB tail for the backup GPT, then grows the file to
// size (sparse), as a disk larger than the image.
func image(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	d, err := diskfs.Create(p, imageEnd+1<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, GUID: "6b0c2a57-1f0e-4c55-9d0b-6a3f6a8f2d41",
		Partitions: []*gpt.Partition{
			{Index: 1, Start: 2048, End: 20479, Type: gpt.Type(disklayout.TypeESP), Name: disklayout.ESP},
			{Index: 2, Start: 20480, End: 49151, Type: gpt.Type(disklayout.TypeSystem), Name: disklayout.SystemA},
			{Index: 3, Start: 49152, End: imageEnd/512 - 1, Type: gpt.Type(disklayout.TypeSystem), Name: disklayout.SystemB},
		}}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func readTable(t *testing.T, p string) *gpt.Table {
	t.Helper()
	d, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	return pt.(*gpt.Table)
}

// On a disk larger than the image, the data partition is added after the
// slots, aligned, over the rest of the disk, with the backup GPT moved to
// the disk's end; a second run finds it and changes nothing.
func TestAddsTheDataPartitionOnce(t *testing.T) {
	const size = 512 << 20
	p := image(t, size)
	n, added, _, err := ensurePartition(p)
	if err != nil || !added || n != 4 {
		t.Fatalf("ensurePartition = %d, %v, %v; want 4, added", n, added, err)
	}
	table := readTable(t, p)
	data := find(table)
	if data == nil || data.Index != 4 {
		t.Fatalf("no data partition 4 in the table: %+v", table.Partitions)
	}
	if start := int64(data.Start) * 512; start != imageEnd || start%disklayout.Alignment != 0 {
		t.Errorf("data starts at byte %d, want %d", start, imageEnd)
	}
	if end := int64(data.End+1) * 512; end%disklayout.Alignment != 0 || end > size-33*512 || end < size-disklayout.Alignment-33*512 {
		t.Errorf("data ends at byte %d of a %d-byte disk", end, size)
	}
	if table.LastDataSector() != uint64(size/512-34) {
		t.Errorf("the GPT's last usable sector is %d, want %d: its backup is not at the disk's end", table.LastDataSector(), size/512-34)
	}
	before, _ := os.ReadFile(p)
	if n, added, _, err := ensurePartition(p); err != nil || added || n != 4 {
		t.Fatalf("second ensurePartition = %d, %v, %v; want 4, not added", n, added, err)
	}
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Error("the second run wrote to the disk")
	}
}

func TestDiskTooSmallNamesTheSizes(t *testing.T) {
	p := image(t, imageEnd+100<<20)
	before, _ := os.ReadFile(p)
	_, _, _, err := ensurePartition(p)
	if err == nil || !strings.Contains(err.Error(), "disk too small for the data partition") || !strings.Contains(err.Error(), "256 MiB") || !strings.Contains(err.Error(), p) {
		t.Errorf("ensurePartition on a small disk: %v", err)
	}
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Error("the refused disk was written to")
	}
}

// A partition without ext4 is formatted; one with ext4 is found formatted
// and never formatted again (a file written on it survives).
func TestFormatsOnlyWithoutExt4(t *testing.T) {
	mke2fs, err := exec.LookPath("mke2fs")
	if err != nil {
		mke2fs = "/usr/sbin/mke2fs"
	}
	dev := filepath.Join(t.TempDir(), "part")
	if err := os.WriteFile(dev, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(dev, 64<<20)
	if ok, err := hasExt4(dev); ok || err != nil {
		t.Fatalf("hasExt4 of zeros = %v, %v", ok, err)
	}
	if err := format(context.Background(), mke2fs, dev); err != nil {
		t.Fatal(err)
	}
	if ok, err := hasExt4(dev); !ok || err != nil {
		t.Fatalf("hasExt4 after mke2fs = %v, %v", ok, err)
	}
}
