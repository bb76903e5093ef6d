package tarball_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ggcrtarball "github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/build/oci/bundle/layouttest"
	"github.com/appliance-bundler/appliance/build/oci/tarball"
)

// compressions are how every good tarball is tried.
func compressions() []string { return []string{"", "gzip", "zstd"} }

func compress(t *testing.T, data []byte, kind string) []byte {
	t.Helper()
	var b bytes.Buffer
	switch kind {
	case "":
		return data
	case "gzip":
		w := gzip.NewWriter(&b)
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case "zstd":
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// image is a random image of the given platform.
func image(t *testing.T, os, arch string) v1.Image {
	t.Helper()
	return layouttest.RandomImage(t, v1.Platform{OS: os, Architecture: arch})
}

// dockerSave writes images by tag as go-containerregistry's tarball writer
// does (the docker save format).
func dockerSave(t *testing.T, imgs map[string]v1.Image) []byte {
	t.Helper()
	refs := map[name.Reference]v1.Image{}
	for tag, img := range imgs {
		r, err := name.NewTag(tag)
		if err != nil {
			t.Fatal(err)
		}
		refs[r] = img
	}
	var b bytes.Buffer
	if err := ggcrtarball.MultiRefWrite(refs, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// index makes a two-platform index of fresh random images.
func index(t *testing.T) (v1.ImageIndex, map[string]v1.Image) {
	t.Helper()
	ii := layouttest.RandomIndex(t, v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "arm64"})
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	imgs := map[string]v1.Image{}
	for _, d := range im.Manifests {
		if imgs[d.Platform.String()], err = ii.Image(d.Digest); err != nil {
			t.Fatal(err)
		}
	}
	return ii, imgs
}

// storeBlob puts raw bytes in containerd's local content store.
func storeBlob(t *testing.T, cs content.Store, mt string, data []byte) ocispec.Descriptor {
	t.Helper()
	d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(context.Background(), cs, d.Digest.String(), bytes.NewReader(data), d); err != nil {
		t.Fatal(err)
	}
	return d
}

func storeImage(t *testing.T, cs content.Store, img v1.Image) ocispec.Descriptor {
	t.Helper()
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	storeBlob(t, cs, string(m.Config.MediaType), cfg)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		mt, err := l.MediaType()
		if err != nil {
			t.Fatal(err)
		}
		storeBlob(t, cs, string(mt), data)
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return storeBlob(t, cs, string(mt), raw)
}

// ctrExport writes what `ctr export` writes: containerd's own exporter over
// a local content store holding top (an index or an image), naming it ref.
func ctrExport(t *testing.T, top any, ref string, opts ...archive.ExportOpt) []byte {
	t.Helper()
	cs, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	desc := store(t, cs, top)
	var b bytes.Buffer
	opts = append([]archive.ExportOpt{archive.WithManifest(desc, ref)}, opts...)
	if err := archive.Export(context.Background(), cs, &b, opts...); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// ctrExportMany exports several images (name → image) in one tarball.
func ctrExportMany(t *testing.T, imgs map[string]v1.Image) []byte {
	t.Helper()
	cs, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var opts []archive.ExportOpt
	for ref, img := range imgs {
		opts = append(opts, archive.WithManifest(store(t, cs, img), ref))
	}
	var b bytes.Buffer
	if err := archive.Export(context.Background(), cs, &b, opts...); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// store puts an index or an image with all its blobs in cs.
func store(t *testing.T, cs content.Store, top any) ocispec.Descriptor {
	t.Helper()
	var desc ocispec.Descriptor
	switch top := top.(type) {
	case v1.Image:
		desc = storeImage(t, cs, top)
	case v1.ImageIndex:
		im, err := top.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range im.Manifests {
			img, err := top.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			storeImage(t, cs, img)
		}
		raw, err := top.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		desc = storeBlob(t, cs, ocispec.MediaTypeImageIndex, raw)
	}
	return desc
}

// load writes data as a tarball file and loads it with selector.
func load(t *testing.T, data []byte, selector string) (string, string, *tarball.Result, error) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "image.tar")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "layout")
	res, err := tarball.Load(context.Background(), p, selector, out)
	return p, out, res, err
}

func mustLoad(t *testing.T, data []byte, selector string) (string, *tarball.Result) {
	t.Helper()
	_, out, res, err := load(t, data, selector)
	if err != nil {
		t.Fatal(err)
	}
	return out, res
}

// wantError loads data and expects an error naming the tarball and saying
// each of want.
func wantError(t *testing.T, data []byte, selector string, want ...string) {
	t.Helper()
	p, _, _, err := load(t, data, selector)
	if err == nil {
		t.Fatalf("loading succeeded, want an error saying %q", want)
	}
	for _, w := range append([]string{p}, want...) {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

// entry is one tar entry to write.
type entry struct {
	hdr  tar.Header
	body []byte
}

// readTar lists a tar's entries.
func readTar(t *testing.T, data []byte) []entry {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var out []entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{hdr: *hdr, body: body})
	}
}

func writeTar(t *testing.T, entries []entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg || h.Typeflag == 0 {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func reg(name string, body []byte) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: body}
}

func link(name, target string, typ byte) entry {
	return entry{hdr: tar.Header{Name: name, Linkname: target, Typeflag: typ}}
}
