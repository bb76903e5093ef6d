package node

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/appliance-bundler/appliance/core/disklayout"
	"github.com/appliance-bundler/appliance/tests/launch"
)

// DataPartition is the byte offset and size of the data partition in the
// VM's disk at state (Extra.State), which its first boot added.
func DataPartition(t testing.TB, state string) (offset, size int64) {
	t.Helper()
	return Partition(t, state, disklayout.Data)
}

// Partition is the byte offset and size of the partition called name
// (core/disklayout) in the VM's disk at state.
func Partition(t testing.TB, state, name string) (offset, size int64) {
	t.Helper()
	d, err := diskfs.Open(state, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range pt.(*gpt.Table).Partitions {
		if part.Name == name {
			return int64(part.Start) * disklayout.SectorSize, int64(part.End-part.Start+1) * disklayout.SectorSize
		}
	}
	t.Fatalf("%s has no partition %s", state, name)
	return 0, 0
}

// ExtractDataPartition copies the data partition of the disk at state into
// a file of its own (holes kept: it is mostly empty), for tools that read a
// file system image, and returns its path.
func ExtractDataPartition(t testing.TB, state string) string {
	t.Helper()
	offset, size := DataPartition(t, state)
	in, err := os.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	p := filepath.Join(t.TempDir(), "data.ext4")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	n, err := launch.CopySparse(out, io.NewSectionReader(in, offset, size))
	if err != nil {
		t.Fatal(err)
	}
	// Its zeros at the end are holes too: the file takes the full size.
	if err := out.Truncate(n); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}
