package erofs

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/imagebuild"
	"github.com/appliance-bundler/appliance/build/oci/validate"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/erofscache"
)

// baseLayer holds what testLayer deletes and hides.
func baseLayer(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range []string{"etc/gone", "data/old"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: 4, ModTime: testMtime}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte("old\n")); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testBundle writes a zstd bundle of a two-layer image (baseLayer, then
// testLayer) and returns its path and the layers' diffIDs.
func testBundle(t *testing.T) (string, []digest.Digest) {
	t.Helper()
	return bundleOf(t, "app:1.0", bundleformat.Zstd, baseLayer(t), testLayer(t))
}

// bundleOf writes a bundle named ref of an image of the layers (tars) and
// returns its path and the layers' diffIDs.
func bundleOf(t *testing.T, ref string, comp bundleformat.Compression, layers ...[]byte) (string, []digest.Digest) {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	var diffIDs []digest.Digest
	for i, l := range layers {
		p := filepath.Join(dir, "layer"+string(rune('0'+i))+".tar")
		if err := os.WriteFile(p, l, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
		diffIDs = append(diffIDs, digest.FromBytes(l))
	}
	img, err := imagebuild.Build(imagebuild.Spec{Layers: paths, OS: "linux", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(dir, "layout")
	if _, err := imagebuild.WriteLayout(layout, img); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "bundle"+comp.Ext())
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.Write(f, layout, ref, comp); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return out, diffIDs
}

// CacheBundle converts both layers, in layer order, and writes a slim
// bundle without them that the format's reader and validate accept, the
// same bytes every time.
func TestCacheBundle(t *testing.T) {
	ctx := context.Background()
	in, diffIDs := testBundle(t)
	cache, out := t.TempDir(), t.TempDir()
	slim := filepath.Join(out, "app.tar.zst")
	entries, err := CacheBundle(ctx, in, slim, cache)
	if err != nil {
		t.Fatalf("CacheBundle: %v", err)
	}
	if len(entries) != 2 || entries[0].DiffID != diffIDs[0] || entries[1].DiffID != diffIDs[1] {
		t.Fatalf("entries %+v, want the two layers' diffIDs %v in order", entries, diffIDs)
	}
	var cached []digest.Digest
	for _, e := range entries {
		if _, err := os.Stat(erofscache.BlobPath(cache, e.DiffID)); err != nil {
			t.Errorf("layer %s: %v", e.Digest, err)
		}
		cached = append(cached, e.Digest)
	}
	res, err := validate.Bundle(slim, t.TempDir())
	if err != nil {
		t.Fatalf("validate.Bundle of the slim bundle: %v", err)
	}
	for _, name := range res.Entries {
		for _, d := range cached {
			if name == bundleformat.BlobName(d) {
				t.Errorf("the slim bundle still holds layer %s", d)
			}
		}
	}
	if got := res.Index[0].Annotations[bundleformat.AnnotationCachedLayers]; got != bundleformat.JoinCachedLayers(cached) {
		t.Errorf("index.json's %s = %q, want %q", bundleformat.AnnotationCachedLayers, got, bundleformat.JoinCachedLayers(cached))
	}
	if c, err := bundle.DetectCompression(slim); err != nil || c != bundleformat.Zstd {
		t.Errorf("slim bundle compression %q (%v), want zstd as its input", c, err)
	}
	e, err := bundle.Inspect(slim)
	if err != nil {
		t.Fatalf("Inspect of the slim bundle: %v", err)
	}
	full, err := bundle.Inspect(in)
	if err != nil {
		t.Fatal(err)
	}
	if e.Target.Digest != full.Target.Digest {
		t.Errorf("slim target %s, full %s: the image must keep its digest", e.Target.Digest, full.Target.Digest)
	}

	// Again into a fresh cache: the same bytes.
	slim2 := filepath.Join(t.TempDir(), "app.tar.zst")
	cache2 := t.TempDir()
	if _, err := CacheBundle(ctx, in, slim2, cache2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read(t, slim), read(t, slim2)) {
		t.Error("two slim bundles of the same input differ")
	}
	for _, e := range entries {
		if !bytes.Equal(read(t, erofscache.BlobPath(cache, e.DiffID)), read(t, erofscache.BlobPath(cache2, e.DiffID))) {
			t.Errorf("blob of layer %s differs between two caches", e.Digest)
		}
	}
}

// A slim bundle is not converted again: its layers are not there.
func TestCacheBundleRefusesSlim(t *testing.T) {
	ctx := context.Background()
	in, _ := testBundle(t)
	cache := t.TempDir()
	slim := filepath.Join(t.TempDir(), "app.tar.zst")
	if _, err := CacheBundle(ctx, in, slim, cache); err != nil {
		t.Fatal(err)
	}
	_, err := CacheBundle(ctx, slim, filepath.Join(t.TempDir(), "again.tar.zst"), cache)
	if err == nil || !strings.Contains(err.Error(), "already slim") || !strings.Contains(err.Error(), slim) {
		t.Fatalf("CacheBundle of a slim bundle: %v, want an error naming it as already slim", err)
	}
}
