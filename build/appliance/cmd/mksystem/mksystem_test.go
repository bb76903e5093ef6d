package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/go-dmverity/pkg/verity"
	erofs "github.com/erofs/go-erofs"

	"github.com/appliance-bundler/appliance/build/erofsmkfs/mkfstest"
	"github.com/appliance-bundler/appliance/core/systemimage"
)

// writeTree writes a tar of a small root: a binary, a directory and a
// symlink, as mkinitramfs -format tar does.
func writeTree(t *testing.T, dir string, initData []byte) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "init", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(initData))},
		{Name: "sbin/init", Typeflag: tar.TypeSymlink, Linkname: "/init", Mode: 0o777},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(initData)
		}
	}
	tw.Close()
	p := filepath.Join(dir, "tree.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func build(t *testing.T, tree, dir string) (string, systemimage.Info) {
	t.Helper()
	mkfs, err := mkfstest.Pinned()
	if err != nil {
		t.Fatal(err)
	}
	out, infoPath := filepath.Join(dir, "system.img"), filepath.Join(dir, "system.json")
	if err := run(context.Background(), mkfs, tree, out, infoPath); err != nil {
		t.Fatal(err)
	}
	info, err := systemimage.ReadInfo(infoPath)
	if err != nil {
		t.Fatal(err)
	}
	return out, info
}

// The image is an EROFS of the tree that go-erofs reads back, with a hash
// tree that go-dmverity verifies against the root hash of its info; a
// flipped byte of the tree's data fails that; the same tree gives the same
// bytes.
func TestSystemImage(t *testing.T) {
	dir := t.TempDir()
	initData := bytes.Repeat([]byte("appliance init\n"), 10000)
	tree := writeTree(t, dir, initData)
	img, info := build(t, tree, t.TempDir())

	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fsys, err := erofs.Open(io.NewSectionReader(f, 0, int64(info.HashOffset)))
	if err != nil {
		t.Fatalf("go-erofs cannot open the image: %v", err)
	}
	got, err := fs.ReadFile(fsys, "init")
	if err != nil || !bytes.Equal(got, initData) {
		t.Fatalf("init in the image: %d bytes (%v), want the %d of the tree", len(got), err, len(initData))
	}
	if fi, err := fs.Stat(fsys, "init"); err != nil || fi.Mode().Perm() != 0o755 || fi.ModTime().Unix() != 0 {
		t.Errorf("init: %v, %v; want mode 0755 and mtime 0", fi, err)
	}

	if err := verify(img, info); err != nil {
		t.Fatalf("go-dmverity does not verify the image against its root hash %s: %v", info.RootHash, err)
	}
	st, _ := os.Stat(img)
	if st.Size() != info.Size {
		t.Errorf("the image has %d bytes, its info says %d", st.Size(), info.Size)
	}

	again, info2 := build(t, tree, t.TempDir())
	if info2 != info || !bytes.Equal(read(t, img), read(t, again)) {
		t.Errorf("two builds of one tree differ: %+v, %+v", info, info2)
	}

	// A byte of init's data flipped: the hash tree no longer matches.
	b := read(t, img)
	i := bytes.Index(b, []byte("appliance init"))
	b[i] ^= 1
	bad := filepath.Join(t.TempDir(), "flipped.img")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := verify(bad, info); err == nil {
		t.Error("a flipped data byte still verifies")
	}
}

// A tree that is not a tar, or an empty one, is refused naming it, and no
// image is written (mkfs.erofs alone would make an empty one).
func TestBadTreeNamesIt(t *testing.T) {
	mkfs, err := mkfstest.Pinned()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"not a tar": bytes.Repeat([]byte("not a tar"), 100), "empty tar": make([]byte, 1024)} {
		dir := t.TempDir()
		tree := filepath.Join(dir, "tree.tar")
		os.WriteFile(tree, data, 0o644)
		out := filepath.Join(dir, "out")
		err = run(context.Background(), mkfs, tree, out, filepath.Join(dir, "info"))
		if err == nil || !strings.Contains(err.Error(), tree) {
			t.Errorf("%s: %v; want an error naming %s", name, err, tree)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: an image was written", name)
		}
	}
}

func verify(img string, info systemimage.Info) error {
	root, err := hex.DecodeString(info.RootHash)
	if err != nil {
		return err
	}
	p := verity.DefaultParams()
	p.HashAreaOffset = info.HashOffset
	return verity.Verify(&p, img, img, root)
}

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
