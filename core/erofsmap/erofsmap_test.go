package erofsmap_test

import (
	"bytes"
	"errors"
	"io/fs"
	"testing"

	erofs "github.com/erofs/go-erofs"

	"github.com/appliance-bundler/appliance/core/erofsmap"
	"github.com/appliance-bundler/appliance/tests/erofstest"
)

// image writes an uncompressed EROFS holding files and opens it.
func image(t *testing.T, files map[string][]byte) ([]byte, fs.FS) {
	t.Helper()
	img := erofstest.Write(t, files)
	fsys, err := erofs.Open(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	return img, fsys
}

// Every byte of each file's ranges is that file's byte in the image, and
// Locate finds each back; the superblock is no file's.
func TestRangesAndLocate(t *testing.T) {
	files := map[string][]byte{
		"/a":     bytes.Repeat([]byte("a file of its own "), 300),
		"/dir/b": bytes.Repeat([]byte{0, 1, 2, 3, 4, 5, 6}, 2000),
	}
	img, fsys := image(t, files)
	for name, want := range files {
		rs, err := erofsmap.Ranges(fsys, name[1:])
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		for _, r := range rs {
			if r.FileOffset != int64(len(got)) {
				t.Fatalf("%s: range at file offset %d after %d bytes", name, r.FileOffset, len(got))
			}
			got = append(got, img[r.Offset:r.Offset+r.Size]...)
			for _, off := range []int64{r.Offset, r.Offset + r.Size/2, r.Offset + r.Size - 1} {
				loc, err := erofsmap.Locate(fsys, off)
				if err != nil || loc.Path != name[1:] || loc.FileOffset != r.FileOffset+off-r.Offset {
					t.Errorf("Locate(%d) = %+v, %v; want %s at %d", off, loc, err, name, r.FileOffset+off-r.Offset)
				}
			}
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: its ranges hold %d bytes that are not its %d", name, len(got), len(want))
		}
	}
	if loc, err := erofsmap.Locate(fsys, 0); !errors.Is(err, erofsmap.ErrNotFound) {
		t.Errorf("Locate(0) = %+v, %v; want ErrNotFound (the superblock's area)", loc, err)
	}
	if _, err := erofsmap.Ranges(fsys, "dir"); err == nil {
		t.Error("Ranges of a directory: no error")
	}
}
