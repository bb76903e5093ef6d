// Package erofstest writes small uncompressed EROFS images for tests, with
// go-erofs's writer: the images the tests of core/erofsmap and
// core/devmapper read back. It is a test helper library: it must not be
// linked into a tool or the appliance.
package erofstest

import (
	"os"
	"path/filepath"
	"testing"

	erofs "github.com/erofs/go-erofs"
)

// Write returns the bytes of an EROFS image holding files (absolute paths
// to contents), their parent directories made as needed.
func Write(t testing.TB, files map[string][]byte) []byte {
	t.Helper()
	out, err := os.Create(filepath.Join(t.TempDir(), "img.erofs"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	w := erofs.Create(out)
	for name, data := range files {
		f, err := w.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return img
}
