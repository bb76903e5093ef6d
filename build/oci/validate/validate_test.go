package validate_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/imagebuild"
	"github.com/appliance-bundler/appliance/build/oci/validate"
)

// newLayout builds a one-layer image with imagebuild and returns its layout.
func newLayout(t *testing.T) (string, *validate.Result) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "hello")
	if err := os.WriteFile(src, []byte("#!/bin/true\n"), 0o755); err != nil {
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
	img, err := imagebuild.Build(imagebuild.Spec{Layers: []string{tarPath}, OS: "linux", Architecture: "amd64", Entrypoint: []string{"/bin/hello"}})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "layout")
	if _, err := imagebuild.WriteLayout(out, img); err != nil {
		t.Fatal(err)
	}
	res, err := validate.Layout(out)
	if err != nil {
		t.Fatalf("fresh layout is invalid: %v", err)
	}
	return out, res
}

func blobOf(dir, digest string) string {
	return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// TestLayoutRejects breaks a valid layout in each way the spec forbids and
// expects the validator to say so.
func TestLayoutRejects(t *testing.T) {
	for name, c := range map[string]struct {
		breakIt func(t *testing.T, dir string, res *validate.Result)
		want    string
	}{
		"corrupted layer": {func(t *testing.T, dir string, res *validate.Result) {
			for d, mt := range res.Blobs {
				if strings.Contains(mt, "layer") {
					data, _ := os.ReadFile(blobOf(dir, d))
					data[len(data)/2] ^= 1
					_ = os.WriteFile(blobOf(dir, d), data, 0o644)
				}
			}
		}, "content digest"},
		"missing config": {func(t *testing.T, dir string, res *validate.Result) {
			for d, mt := range res.Blobs {
				if strings.Contains(mt, "config") {
					_ = os.Remove(blobOf(dir, d))
				}
			}
		}, "missing"},
		"wrong layout version": {func(t *testing.T, dir string, _ *validate.Result) {
			_ = os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"2.0.0"}`), 0o644)
		}, "imageLayoutVersion"},
		"no schemaVersion": {func(t *testing.T, dir string, _ *validate.Result) {
			data, _ := os.ReadFile(filepath.Join(dir, "index.json"))
			_ = os.WriteFile(filepath.Join(dir, "index.json"), bytes.Replace(data, []byte(`"schemaVersion": 2,`), nil, 1), 0o644)
		}, "schemaVersion"},
		"bad media type": {func(t *testing.T, dir string, _ *validate.Result) {
			data, _ := os.ReadFile(filepath.Join(dir, "index.json"))
			_ = os.WriteFile(filepath.Join(dir, "index.json"), bytes.Replace(data, []byte("manifest.v1+json"), []byte("manifest.v9+json"), 1), 0o644)
		}, "mediaType"},
	} {
		t.Run(name, func(t *testing.T) {
			dir, res := newLayout(t)
			c.breakIt(t, dir, res)
			_, err := validate.Layout(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error about %q, got %v", c.want, err)
			}
		})
	}
}

func TestBundleRoundTrip(t *testing.T) {
	dir, res := newLayout(t)
	for _, comp := range []bundle.Compression{bundle.None, bundle.Gzip, bundle.Zstd} {
		var a, b bytes.Buffer
		if err := bundle.Write(&a, dir, "hello:1.0", comp); err != nil {
			t.Fatal(err)
		}
		if err := bundle.Write(&b, dir, "hello:1.0", comp); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("%q: two bundles of one layout differ", comp)
		}
		p := filepath.Join(t.TempDir(), "b"+comp.Ext())
		if err := os.WriteFile(p, a.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		br, err := validate.Bundle(p, t.TempDir())
		if err != nil {
			t.Fatalf("%q: %v", comp, err)
		}
		if br.Reference != "docker.io/library/hello:1.0" || br.Index[0].Digest != res.Manifests[0] {
			t.Errorf("%q: bundle names %s → %s", comp, br.Reference, br.Index[0].Digest)
		}
		info, err := bundle.Inspect(p)
		if err != nil || info.Target.Digest.String() != res.Manifests[0] || len(info.Manifests) != 1 {
			t.Errorf("%q: inspect: %+v, %v", comp, info, err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.Write(&buf, dir, "hello", bundle.None); err == nil {
		t.Error("a reference without tag was accepted")
	}
}
