package bundleformat_test

import (
	"archive/tar"
	"bytes"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/bundle/layouttest"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// platform is a test's exact-match platform choice (what containerd's
// platforms.Only does for one platform, without variants).
type platform struct{ os, arch string }

func (p platform) Match(q ocispec.Platform) bool   { return q.OS == p.os && q.Architecture == p.arch }
func (p platform) Less(a, b ocispec.Platform) bool { return a.Variant < b.Variant }

// singleLayout is the layout of a one-platform image.
func singleLayout(t testing.TB) string {
	t.Helper()
	return layouttest.Single(t, "linux/amd64", "#!/bin/true\n")
}

// indexLayout is the layout of a two-platform image index.
func indexLayout(t testing.TB) string {
	t.Helper()
	return layouttest.Index(t, "linux/amd64", "linux/arm64")
}

// realBundle is the uncompressed bundle the project's writer makes of a
// layout, narrowed to platforms if any.
func realBundle(t testing.TB, layoutDir, ref string, platforms ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := bundle.Write(&b, layoutDir, ref, bundleformat.None, platforms...); err != nil {
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
