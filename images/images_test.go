// Package images_test checks every image and bundle that images/ builds:
// each layout against the OCI image-layout spec, each bundle against
// docs/bundle-format.md, that building the same image twice gives the same
// digest and bytes, and that the preseed tree's manifest describes its files.
package images_test

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/build/oci/validate"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

type image struct {
	name, ref string
}

var images = []image{
	{"HELLO", "docker.io/library/hello:1.0"},
	{"PAUSE", "localhost/appliance/pause:1.0"},
}

func TestLayoutsValidAndReproducible(t *testing.T) {
	for _, img := range images {
		t.Run(img.name, func(t *testing.T) {
			a, err := validate.Layout(runfile.Path(t, img.name+"_IMAGE"))
			if err != nil {
				t.Fatal(err)
			}
			b, err := validate.Layout(runfile.Path(t, img.name+"_IMAGE_AGAIN"))
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Manifests) != 1 || len(a.Blobs) != 3 {
				t.Fatalf("want one manifest with a config and one layer, got %+v", a)
			}
			if a.Manifests[0] != b.Manifests[0] {
				t.Fatalf("the same image built twice has digests %s and %s", a.Manifests[0], b.Manifests[0])
			}
			t.Logf("%s manifest %s", img.name, a.Manifests[0])
		})
	}
}

func fileSHA(t *testing.T, p string) (string, int64) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

func TestBundles(t *testing.T) {
	for _, img := range images {
		t.Run(img.name, func(t *testing.T) {
			layout, err := validate.Layout(runfile.Path(t, img.name+"_IMAGE"))
			if err != nil {
				t.Fatal(err)
			}
			for _, kind := range []string{"_BUNDLE", "_BUNDLE_AGAIN", "_BUNDLE_ZSTD"} {
				res, err := validate.Bundle(runfile.Path(t, img.name+kind), t.TempDir())
				if err != nil {
					t.Fatalf("%s: %v", kind, err)
				}
				if res.Reference != img.ref {
					t.Errorf("%s names %q, want %q", kind, res.Reference, img.ref)
				}
				if res.Index[0].Digest != layout.Manifests[0] {
					t.Errorf("%s holds %s, the image is %s", kind, res.Index[0].Digest, layout.Manifests[0])
				}
			}
			a, size := fileSHA(t, runfile.Path(t, img.name+"_BUNDLE"))
			b, _ := fileSHA(t, runfile.Path(t, img.name+"_BUNDLE_AGAIN"))
			if a != b {
				t.Errorf("bundles of the same image differ: %s and %s", a, b)
			}
			t.Logf("%s bundle %d bytes, sha256 %s", img.name, size, a)
		})
	}
}

// TestPreseedTree checks the tree tar's entries against its JSON manifest
// and the manifest against the bundles it names.
func TestPreseedTree(t *testing.T) {
	data, err := os.ReadFile(runfile.Path(t, "PRESEED_JSON"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundleformat.ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Bundles) != 2 {
		t.Fatalf("want 2 bundles in the manifest, got %d", len(m.Bundles))
	}
	f, err := os.Open(runfile.Path(t, "PRESEED_TAR"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string]string{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Uid != 0 || hdr.Gid != 0 || hdr.ModTime.Unix() != 0 {
			t.Errorf("%s: owner %d:%d mtime %v", hdr.Name, hdr.Uid, hdr.Gid, hdr.ModTime)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		h := sha256.New()
		if _, err := io.Copy(h, tr); err != nil {
			t.Fatal(err)
		}
		files["/"+hdr.Name] = hex.EncodeToString(h.Sum(nil))
	}
	for i, img := range images {
		e := m.Bundles[i]
		want := "/containerd/preseed/k8s.io/" + strings.ToLower(img.name) + ".tar"
		if e.Path != want || e.Namespace != "k8s.io" || e.Reference != img.ref {
			t.Errorf("manifest entry %d: %+v, want path %s, namespace k8s.io, reference %s", i, e, want, img.ref)
		}
		sum, size := fileSHA(t, runfile.Path(t, img.name+"_BUNDLE"))
		if e.SHA256 != sum || e.Size != size || files[e.Path] != sum {
			t.Errorf("%s: manifest says sha256 %s size %d, bundle is %s %d, tree holds %s", e.Path, e.SHA256, e.Size, sum, size, files[e.Path])
		}
		layout, err := validate.Layout(runfile.Path(t, img.name+"_IMAGE"))
		if err != nil {
			t.Fatal(err)
		}
		if len(e.Manifests) != 1 || e.Manifests[0].Digest.String() != layout.Manifests[0] || e.Target.Digest.String() != layout.Manifests[0] {
			t.Errorf("%s: manifest digests %+v, target %s, image is %s", e.Path, e.Manifests, e.Target.Digest, layout.Manifests[0])
		}
		if !strings.HasPrefix(e.IndexDigest.String(), "sha256:") {
			t.Errorf("%s: no index digest", e.Path)
		}
	}
	if len(files) != 2 {
		t.Errorf("tree holds %d files, want 2: %v", len(files), files)
	}
}
