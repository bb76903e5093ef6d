package node

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/appliance-bundler/appliance/core/disklayout"
)

// DataPartition is the byte offset and size of the data partition in the
// VM's disk at state (Extra.State), which its first boot added.
func DataPartition(t testing.TB, state string) (offset, size int64) {
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
		if part.Name == disklayout.Data {
			return int64(part.Start) * disklayout.SectorSize, int64(part.End-part.Start+1) * disklayout.SectorSize
		}
	}
	t.Fatalf("%s has no data partition", state)
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
	if err := out.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf, zero := make([]byte, 1<<20), make([]byte, 1<<20)
	src := io.NewSectionReader(in, offset, size)
	for at := int64(0); at < size; at += int64(len(buf)) {
		n, err := src.ReadAt(buf, at)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := out.WriteAt(buf[:n], at); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}
