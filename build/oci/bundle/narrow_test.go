package bundle_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/bundle/layouttest"
	"github.com/appliance-bundler/appliance/build/oci/validate"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// write bundles a layout into a file and returns its path.
func write(t *testing.T, layoutDir, ref string, platforms ...string) string {
	t.Helper()
	var b bytes.Buffer
	if err := bundle.Write(&b, layoutDir, ref, bundleformat.None, platforms...); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "b.tar")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A two-platform index narrowed to one: the original index blob (so the
// target digest is the built one), only that platform's blobs, the
// annotation, and the same bytes every time.
func TestWriteNarrowsIndex(t *testing.T) {
	dir := layouttest.Index(t, "linux/amd64", "linux/arm64")
	top := layouttest.TopIndex(t, dir).Manifests[0]
	p := write(t, dir, "hello:1.0", "linux/amd64")
	if again := write(t, dir, "hello:1.0", "linux/amd64"); !sameFile(t, p, again) {
		t.Error("two narrowed bundles of one layout differ")
	}
	br, err := validate.Bundle(p, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := br.Index[0]
	if d.Digest != top.Digest.String() || d.Annotations[bundleformat.AnnotationPlatforms] != "linux/amd64" {
		t.Fatalf("index.json descriptor %+v, want target %s narrowed to linux/amd64", d, top.Digest)
	}
	// index, amd64 manifest and config, one layer.
	if len(br.Blobs) != 4 || len(br.Manifests) != 1 {
		t.Errorf("bundle holds %d blobs, %d manifests; want 4 and 1: %v", len(br.Blobs), len(br.Manifests), br.Entries)
	}
	// What narrowing keeps costs only the index blob over the bundle of
	// the same platform's image alone: the same blobs, plus that one.
	single, err := validate.Bundle(write(t, layouttest.Single(t, "linux/amd64", "linux/amd64\n"), "hello:1.0"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	extra := slices.DeleteFunc(slices.Clone(br.Entries[2:]), func(e string) bool { return slices.Contains(single.Entries, e) })
	if single.Manifests[0] != br.Manifests[0] || !slices.Equal(extra, []string{bundleformat.BlobPrefix + top.Digest.Hex}) {
		t.Errorf("narrowed bundle's blobs %v, the single image's %v: want the same and the index %s", br.Entries, single.Entries, top.Digest)
	}
	e, err := bundle.Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	repo := "docker.io/library/hello"
	want := []string{repo + ":1.0", repo + "@" + top.Digest.String(), repo + "@" + br.Manifests[0]}
	if e.Target.Digest.String() != top.Digest.String() || len(e.Manifests) != 1 || e.Manifests[0].Platform.Architecture != "amd64" || !slices.Equal(e.References, want) {
		t.Errorf("Inspect: target %s, manifests %+v, references %q; want %s, amd64, %q", e.Target.Digest, e.Manifests, e.References, top.Digest, want)
	}
}

// A layout the fetcher narrowed is bundled as it is (the same bytes as
// narrowing the whole layout), or narrowed further; a platform it does
// not hold is an error naming the layout and what it holds.
func TestWriteNarrowedLayout(t *testing.T) {
	whole := layouttest.Index(t, "linux/amd64", "linux/arm64", "linux/arm/v7")
	pulled := layouttest.Index(t, "linux/amd64", "linux/arm64", "linux/arm/v7")
	if removed := layouttest.Narrow(t, pulled, "linux/amd64", "linux/arm64"); len(removed) != 3 {
		t.Fatalf("narrowing removed %d blobs, want arm/v7's manifest, config and layer", len(removed))
	}
	if _, err := validate.Layout(pulled); err != nil {
		t.Fatalf("a narrowed layout is refused: %v", err)
	}
	asIs := write(t, pulled, "multi:1")
	if !sameFile(t, asIs, write(t, whole, "multi:1", "linux/arm64", "linux/amd64")) {
		t.Error("the narrowed layout bundled as is differs from the whole layout narrowed to its platforms")
	}
	further := write(t, pulled, "multi:1", "linux/arm64")
	if !sameFile(t, further, write(t, whole, "multi:1", "linux/arm64")) {
		t.Error("the narrowed layout narrowed further differs from the whole layout narrowed to that platform")
	}
	for _, p := range []string{asIs, further} {
		if _, err := validate.Bundle(p, t.TempDir()); err != nil {
			t.Error(err)
		}
	}
	var b bytes.Buffer
	err := bundle.Write(&b, pulled, "multi:1", bundleformat.None, "linux/arm/v7")
	if err == nil || !strings.Contains(err.Error(), pulled) || !strings.Contains(err.Error(), "holds only linux/amd64, linux/arm64 of index") {
		t.Errorf("asking a narrowed layout for a platform it left out: want an error naming %s and what it holds, got %v", pulled, err)
	}
	err = bundle.Write(&b, whole, "multi:1", bundleformat.None, "linux/s390x")
	if err == nil || !strings.Contains(err.Error(), "holds only linux/amd64, linux/arm/v7, linux/arm64 of index") {
		t.Errorf("asking for a platform the index lacks: got %v", err)
	}
}

// Errors of the layout or the request, each with its reason.
func TestWriteRejects(t *testing.T) {
	index := layouttest.Index(t, "linux/amd64", "linux/arm64")
	indexDigest := layouttest.TopIndex(t, index).Manifests[0].Digest.String()
	single := layouttest.Single(t, "linux/amd64", "hello\n")
	singleDigest := layouttest.TopIndex(t, single).Manifests[0].Digest.String()
	annotated := layouttest.Single(t, "linux/amd64", "hello\n")
	im := layouttest.TopIndex(t, annotated)
	im.Manifests[0].Annotations = map[string]string{bundleformat.AnnotationPlatforms: "linux/amd64"}
	layouttest.WriteTopIndex(t, annotated, im)
	unlisted := layouttest.Index(t, "linux/amd64", "linux/arm64")
	im = layouttest.TopIndex(t, unlisted)
	im.Manifests[0].Annotations = map[string]string{bundleformat.AnnotationPlatforms: "linux/amd64,linux/s390x"}
	layouttest.WriteTopIndex(t, unlisted, im)
	for name, c := range map[string]struct {
		dir, ref  string
		platforms []string
		want      string
	}{
		"other digest":             {index, "hello@" + singleDigest, nil, "the reference names digest " + singleDigest + ", but the layout's image is " + indexDigest},
		"bad platform":             {index, "hello:1", []string{"linux"}, `platform "linux": want os/arch`},
		"single, other platform":   {single, "hello:1", []string{"linux/arm64"}, "holds only linux/amd64, a single-platform image"},
		"annotated manifest":       {annotated, "hello:1", nil, "which only an image index may"},
		"annotation lists missing": {unlisted, "hello:1", nil, "has no manifest for linux/s390x"},
	} {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			err := bundle.Write(&b, c.dir, c.ref, bundleformat.None, c.platforms...)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.dir) {
				t.Fatalf("want an error naming %s and %q, got %v", c.dir, c.want, err)
			}
		})
	}
	// What is right is accepted: the index's own digest, a single image
	// with its own platform.
	for _, c := range []struct {
		dir, ref  string
		platforms []string
	}{{index, "hello@" + indexDigest, []string{"linux/arm64"}}, {single, "hello@" + singleDigest, []string{"linux/amd64"}}} {
		if _, err := validate.Bundle(write(t, c.dir, c.ref, c.platforms...), t.TempDir()); err != nil {
			t.Errorf("%s %v: %v", c.ref, c.platforms, err)
		}
	}
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}
