package bundleformat_test

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/imagebuild"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// platform is a test's exact-match platform choice (what containerd's
// platforms.Only does for one platform, without variants).
type platform struct{ os, arch string }

func (p platform) Match(q ocispec.Platform) bool   { return q.OS == p.os && q.Architecture == p.arch }
func (p platform) Less(a, b ocispec.Platform) bool { return a.Variant < b.Variant }

// image builds a one-layer image of one file with the project's image
// builder.
func image(t testing.TB, arch, content string) v1.Image {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "hello")
	if err := os.WriteFile(src, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	if err := imagebuild.WriteLayer(&layer, []imagebuild.LayerFile{{Path: "/bin/hello", Source: src, Mode: 0o755}}); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "layer.tar")
	if err := os.WriteFile(tarPath, layer.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := imagebuild.Build(imagebuild.Spec{Layers: []string{tarPath}, OS: "linux", Architecture: arch, Entrypoint: []string{"/bin/hello"}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// singleLayout is the layout of a one-platform image.
func singleLayout(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	if _, err := imagebuild.WriteLayout(dir, image(t, "amd64", "#!/bin/true\n")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// indexLayout is the layout of a two-platform image index.
func indexLayout(t testing.TB) string {
	t.Helper()
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: image(t, "amd64", "amd64\n"), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: image(t, "arm64", "arm64\n"), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx); err != nil {
		t.Fatal(err)
	}
	return dir
}

// realBundle is the uncompressed bundle the project's writer makes of a
// layout.
func realBundle(t testing.TB, layoutDir, ref string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := bundle.Write(&b, layoutDir, ref, bundleformat.None); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// entry is one entry of a tar in memory.
type entry struct {
	hdr  tar.Header
	data []byte
}

// entries reads a whole tar in memory.
func entries(t testing.TB, b []byte) []entry {
	t.Helper()
	var out []entry
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err != nil {
			return out
		}
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(tr); err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{*hdr, buf.Bytes()})
	}
}

// pack writes entries as a tar.
func pack(t testing.TB, es []entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range es {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
