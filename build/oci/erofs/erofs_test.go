package erofs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/go-dmverity/pkg/verity"
	goerofs "github.com/erofs/go-erofs"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/erofscache"
)

// mtime of the test layer's files: kept by the conversion (-T0 sets only
// the build time).
var testMtime = time.Unix(1700000000, 0)

// testLayer is a layer over a base holding /etc/gone and /data/old: it
// deletes /etc/gone (an AUFS whiteout), makes /data opaque, holds /data/new
// with a hard link /data/link to it, and a symlink /bin/sh -> busybox.
func testLayer(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body string) {
		h.ModTime, h.Format = testMtime, tar.FormatPAX
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755}, "")
	add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/sh", Linkname: "busybox", Mode: 0o777}, "")
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o755}, "")
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "data/.wh..wh..opq", Mode: 0o644}, "")
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "data/new", Mode: 0o644}, strings.Repeat("new data\n", 1000))
	add(&tar.Header{Typeflag: tar.TypeLink, Name: "data/link", Linkname: "data/new", Mode: 0o644}, "")
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755}, "")
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/.wh.gone", Mode: 0o644}, "")
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/kept", Mode: 0o600}, "kept\n")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstded(t *testing.T, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

func descOf(mt string, b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

func convert(t *testing.T, dir string, blob []byte, desc ocispec.Descriptor, diffID digest.Digest) Entry {
	t.Helper()
	e, err := ConvertLayer(context.Background(), dir, bytes.NewReader(blob), desc, diffID)
	if err != nil {
		t.Fatalf("ConvertLayer: %v", err)
	}
	return e
}

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The same layer gives the same blob and sidecar, converted twice into two
// caches, and whether it comes gzip-, zstd-compressed or not.
func TestConvertLayerIsReproducible(t *testing.T) {
	raw := testLayer(t)
	diffID := digest.FromBytes(raw)
	gz := gzipped(t, raw)
	zs := zstded(t, raw)
	a, b, c, z := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	ea := convert(t, a, gz, descOf(ocispec.MediaTypeImageLayerGzip, gz), diffID)
	eb := convert(t, b, gz, descOf(ocispec.MediaTypeImageLayerGzip, gz), diffID)
	ec := convert(t, c, raw, descOf(ocispec.MediaTypeImageLayer, raw), diffID)
	ez := convert(t, z, zs, descOf(ocispec.MediaTypeImageLayerZstd, zs), diffID)
	if ea.Path != erofscache.RelPath(diffID) || ea.DiffID != diffID || ea.Digest != digest.FromBytes(gz) {
		t.Errorf("entry %+v: want path %s, diffID %s, digest of the gzip blob", ea, erofscache.RelPath(diffID), diffID)
	}
	blobA := read(t, erofscache.BlobPath(a, diffID))
	if int64(len(blobA)) != ea.Size {
		t.Errorf("entry size %d, blob is %d bytes", ea.Size, len(blobA))
	}
	for _, other := range []string{b, c, z} {
		if !bytes.Equal(blobA, read(t, erofscache.BlobPath(other, diffID))) {
			t.Errorf("blob in %s differs from the first conversion's", other)
		}
		if !bytes.Equal(read(t, erofscache.SidecarPath(erofscache.BlobPath(a, diffID))), read(t, erofscache.SidecarPath(erofscache.BlobPath(other, diffID)))) {
			t.Errorf("sidecar in %s differs from the first conversion's", other)
		}
	}
	if eb.RootHash != ea.RootHash || ec.RootHash != ea.RootHash || ez.RootHash != ea.RootHash {
		t.Errorf("root hashes %s, %s, %s, %s differ", ea.RootHash, eb.RootHash, ec.RootHash, ez.RootHash)
	}
	left, err := os.ReadDir(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Name() != "sha256" {
		t.Errorf("cache directory holds %v, want only sha256/ (no work files left)", left)
	}
}

// The hash tree verifies, and no longer does after one changed byte of the
// EROFS image.
func TestConvertLayerHashTree(t *testing.T) {
	raw := testLayer(t)
	diffID := digest.FromBytes(raw)
	dir := t.TempDir()
	e := convert(t, dir, raw, descOf(ocispec.MediaTypeImageLayer, raw), diffID)
	blob := erofscache.BlobPath(dir, diffID)
	sc, err := erofscache.ReadSidecar(blob)
	if err != nil {
		t.Fatal(err)
	}
	if sc.RootHash != e.RootHash {
		t.Errorf("sidecar root hash %s, entry %s", sc.RootHash, e.RootHash)
	}
	root, err := hex.DecodeString(sc.RootHash)
	if err != nil {
		t.Fatal(err)
	}
	check := func() error {
		p := verity.DefaultParams()
		p.HashAreaOffset = sc.HashOffset
		return verity.Verify(&p, blob, blob, root)
	}
	if err := check(); err != nil {
		t.Fatalf("verity.Verify of a fresh blob: %v", err)
	}
	f := read(t, blob)
	// A byte of /data/new's content (the image ends before the offset).
	i := bytes.Index(f[:sc.HashOffset], []byte("new data\n"))
	if i < 0 {
		t.Fatal("file content not found in the EROFS image")
	}
	f[i] ^= 0xff
	if err := os.WriteFile(blob, f, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := check(); err == nil {
		t.Fatal("verity.Verify accepted a blob with a flipped data byte")
	}
}

// The EROFS image holds the layer as overlayfs wants it: the whiteout as a
// 0:0 character device, the opaque directory marked, the hard link sharing
// its inode, the symlink's target and the tar's mtimes.
func TestConvertLayerContent(t *testing.T) {
	raw := testLayer(t)
	diffID := digest.FromBytes(raw)
	dir := t.TempDir()
	convert(t, dir, raw, descOf(ocispec.MediaTypeImageLayer, raw), diffID)
	f, err := os.Open(erofscache.BlobPath(dir, diffID))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fsys, err := goerofs.Open(f)
	if err != nil {
		t.Fatalf("go-erofs cannot read the image: %v", err)
	}
	stat := func(name string) *goerofs.Stat {
		t.Helper()
		fi, err := fs.Stat(fsys, name)
		if err != nil {
			t.Fatalf("stat %s: %v", name, err)
		}
		return fi.Sys().(*goerofs.Stat)
	}
	if wh := stat("etc/gone"); wh.Mode&fs.ModeCharDevice == 0 || wh.Rdev != 0 {
		t.Errorf("etc/gone: mode %v rdev %d, want an overlayfs whiteout (char device 0:0)", wh.Mode, wh.Rdev)
	}
	if _, err := fs.Stat(fsys, "etc/.wh.gone"); err == nil {
		t.Error("etc/.wh.gone is in the image: the AUFS whiteout was not converted")
	}
	if _, err := fs.Stat(fsys, "data/.wh..wh..opq"); err == nil {
		t.Error("data/.wh..wh..opq is in the image: the opaque marker was not converted")
	}
	if v := stat("data").Xattrs["trusted.overlay.opaque"]; v != "y" {
		t.Errorf("data: trusted.overlay.opaque = %q, want \"y\" (xattrs %v)", v, stat("data").Xattrs)
	}
	n, l := stat("data/new"), stat("data/link")
	if n.Ino != l.Ino || n.Nlink != 2 {
		t.Errorf("data/new (ino %d, nlink %d) and data/link (ino %d): want one inode with two links", n.Ino, n.Nlink, l.Ino)
	}
	if target, err := fsys.(fs.ReadLinkFS).ReadLink("bin/sh"); err != nil || target != "busybox" {
		t.Errorf("bin/sh -> %q (%v), want busybox", target, err)
	}
	if b, err := fs.ReadFile(fsys, "data/link"); err != nil || string(b) != strings.Repeat("new data\n", 1000) {
		t.Errorf("data/link reads %d bytes (%v), want data/new's content", len(b), err)
	}
	if m := stat("etc/kept"); int64(m.Mtime) != testMtime.Unix() || m.Mode.Perm() != 0o600 {
		t.Errorf("etc/kept: mtime %d mode %v, want the tar's %d and 0600", m.Mtime, m.Mode, testMtime.Unix())
	}
	// The superblock's build time (8 bytes at 24 into the superblock, which
	// starts at 1024) is fixed: two builds in different seconds agree.
	sb := make([]byte, 8)
	if _, err := f.ReadAt(sb, 1024+24); err != nil {
		t.Fatal(err)
	}
	if bt := binary.LittleEndian.Uint64(sb); bt != 0 {
		t.Errorf("superblock build time %d, want 0 (-T0)", bt)
	}
}

// A layer whose content is not the config's diffID is refused, naming it;
// a converted layer is reused without reading the blob again.
func TestConvertLayerDiffIDAndReuse(t *testing.T) {
	raw := testLayer(t)
	desc := descOf(ocispec.MediaTypeImageLayer, raw)
	dir := t.TempDir()
	wrong := digest.FromString("another layer")
	_, err := ConvertLayer(context.Background(), dir, bytes.NewReader(raw), desc, wrong)
	if err == nil || !strings.Contains(err.Error(), desc.Digest.String()) || !strings.Contains(err.Error(), wrong.String()) {
		t.Fatalf("ConvertLayer with a wrong diffID: %v, want an error naming the layer and the diffID", err)
	}
	if _, err := os.Stat(erofscache.BlobPath(dir, wrong)); !os.IsNotExist(err) {
		t.Errorf("a blob was left for the wrong diffID: %v", err)
	}
	diffID := digest.FromBytes(raw)
	first := convert(t, dir, raw, desc, diffID)
	again, err := ConvertLayer(context.Background(), dir, iotestErr{}, desc, diffID)
	if err != nil || again != first {
		t.Errorf("second ConvertLayer: %+v, %v; want %+v without reading the layer", again, err, first)
	}
}

// iotestErr fails every read.
type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }
