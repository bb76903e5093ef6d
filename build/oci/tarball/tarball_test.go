package tarball_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/appliance-bundler/appliance/build/oci/validate"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// indexEntry reads the layout's only index.json descriptor.
func indexEntry(t *testing.T, dir string) v1.Descriptor {
	t.Helper()
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("layout %s names %d images, want 1", dir, len(im.Manifests))
	}
	return im.Manifests[0]
}

// sameImage checks that the layout's image has want's config and layers,
// byte for byte.
func sameImage(t *testing.T, dir string, want v1.Image) {
	t.Helper()
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := lp.Image(indexEntry(t, dir).Digest)
	if err != nil {
		t.Fatal(err)
	}
	gc, _ := got.ConfigName()
	wc, _ := want.ConfigName()
	if gc != wc {
		t.Errorf("config %s, want %s", gc, wc)
	}
	gl, _ := got.Layers()
	wl, _ := want.Layers()
	if len(gl) != len(wl) {
		t.Fatalf("%d layers, want %d", len(gl), len(wl))
	}
	for i := range gl {
		gd, _ := gl[i].Digest()
		wd, _ := wl[i].Digest()
		if gd != wd {
			t.Errorf("layer %d is %s, want %s", i, gd, wd)
		}
	}
}

func TestDockerSave(t *testing.T) {
	busybox, other := image(t, "linux", "amd64"), image(t, "linux", "arm64")
	plain := dockerSave(t, map[string]v1.Image{"busybox:1.36": busybox, "example.test/team/other:2": other})
	var first []byte
	for _, kind := range compressions() {
		t.Run("compression="+kind, func(t *testing.T) {
			data := compress(t, plain, kind)
			for _, sel := range []string{"busybox:1.36", "docker.io/library/busybox:1.36"} {
				dir, res := mustLoad(t, data, sel)
				if _, err := validate.Layout(dir); err != nil {
					t.Fatal(err)
				}
				sameImage(t, dir, busybox)
				d := indexEntry(t, dir)
				if d.Digest.String() != res.Digest.String() || d.Platform == nil || d.Platform.Architecture != "amd64" {
					t.Errorf("index.json names %+v, result says %s", d, res.Digest)
				}
				// Deterministic: every load, whatever the compression,
				// writes the same index.json (and so the same manifest).
				idx, err := os.ReadFile(filepath.Join(dir, "index.json"))
				if err != nil {
					t.Fatal(err)
				}
				if first == nil {
					first = idx
				} else if !bytes.Equal(first, idx) {
					t.Errorf("index.json differs between loads:\n%s\n%s", first, idx)
				}
			}
			// By image ID (the config digest), as `docker images` shows it.
			id, _ := other.ConfigName()
			dir, _ := mustLoad(t, data, id.String())
			sameImage(t, dir, other)
		})
	}
}

func TestContainerdExport(t *testing.T) {
	ii, imgs := index(t)
	want, _ := ii.Digest()
	const ref = "docker.io/library/multi:1.0"
	full := ctrExport(t, ii, ref)
	amd64Only := ctrExport(t, ii, ref, archive.WithPlatform(platforms.OnlyStrict(platforms.MustParse("linux/amd64"))))
	for _, kind := range compressions() {
		t.Run("all platforms, compression="+kind, func(t *testing.T) {
			// containerd writes the tag as org.opencontainers.image.ref.name
			// and the full name as io.containerd.image.name: both select.
			for _, sel := range []string{"", "multi:1.0", ref, "1.0", want.String()} {
				dir, res := mustLoad(t, compress(t, full, kind), sel)
				if res.Digest.String() != want.String() || res.Platforms != nil {
					t.Fatalf("selector %q: got %s %v, want %s with every platform", sel, res.Digest, res.Platforms, want)
				}
				if _, err := validate.Layout(dir); err != nil {
					t.Fatal(err)
				}
				if d := indexEntry(t, dir); d.Annotations[bundleformat.AnnotationPlatforms] != "" {
					t.Errorf("index.json entry %+v is annotated as narrowed", d)
				}
			}
		})
		t.Run("platform filter, compression="+kind, func(t *testing.T) {
			dir, res := mustLoad(t, compress(t, amd64Only, kind), ref)
			// The index blob is the original one: the pinned digest stays.
			if res.Digest.String() != want.String() || !slices.Equal(res.Platforms, []string{"linux/amd64"}) {
				t.Fatalf("got %s %v, want %s narrowed to linux/amd64", res.Digest, res.Platforms, want)
			}
			d := indexEntry(t, dir)
			if d.Digest != want || d.Annotations[bundleformat.AnnotationPlatforms] != "linux/amd64" {
				t.Errorf("index.json entry %+v, want %s annotated linux/amd64", d, want)
			}
			raw, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", want.Hex))
			if err != nil {
				t.Fatal(err)
			}
			if orig, _ := ii.RawManifest(); !bytes.Equal(raw, orig) {
				t.Error("the index blob was changed")
			}
			for p, img := range imgs {
				m, _ := img.Digest()
				_, err := os.Stat(filepath.Join(dir, "blobs", "sha256", m.Hex))
				if held := p == "linux/amd64"; held != (err == nil) {
					t.Errorf("manifest of %s: held %v, stat says %v", p, held, err)
				}
			}
			if _, err := validate.Layout(dir); err != nil {
				t.Errorf("validate (narrowed layouts are build/oci/validate's to accept): %v", err)
			}
		})
	}
}

func TestContainerdExportManifest(t *testing.T) {
	img := image(t, "linux", "riscv64")
	// A single manifest, as `ctr export` of a single-platform image
	// writes it: index.json and manifest.json both name it.
	data := ctrExport(t, img, "docker.io/library/single:1")
	dir, res := mustLoad(t, data, "single:1")
	want, _ := img.Digest()
	if res.Digest.String() != want.String() {
		t.Fatalf("digest %s, want %s", res.Digest, want)
	}
	if _, err := validate.Layout(dir); err != nil {
		t.Fatal(err)
	}
	sameImage(t, dir, img)
	if p := indexEntry(t, dir).Platform; p == nil || p.Architecture != "riscv64" {
		t.Errorf("platform %v, want linux/riscv64", p)
	}
}

// Docker before 25 saved layers uncompressed as <id>/layer.tar: they are
// kept as they are, their digest being their diff_id.
func TestDockerSaveUncompressedLayers(t *testing.T) {
	img := image(t, "linux", "amd64")
	saved := dockerSave(t, map[string]v1.Image{"busybox:1.36": img})
	layers, _ := img.Layers()
	var entries []entry
	renames := map[string]string{}
	for _, e := range readTar(t, saved) {
		for i, l := range layers {
			if d, _ := l.Digest(); e.hdr.Name == d.Hex+".tar.gz" {
				rc, err := l.Uncompressed()
				if err != nil {
					t.Fatal(err)
				}
				e.body, err = io.ReadAll(rc)
				rc.Close()
				if err != nil {
					t.Fatal(err)
				}
				renames[e.hdr.Name] = fmt.Sprintf("layer%d/layer.tar", i)
				e.hdr.Name = renames[e.hdr.Name]
			}
		}
		entries = append(entries, e)
	}
	for i, e := range entries {
		if e.hdr.Name == "manifest.json" {
			for from, to := range renames {
				e.body = bytes.ReplaceAll(e.body, []byte(from), []byte(to))
			}
			entries[i] = e
		}
	}
	dir, _ := mustLoad(t, writeTar(t, entries), "busybox:1.36")
	if _, err := validate.Layout(dir); err != nil {
		t.Fatal(err)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := lp.Image(indexEntry(t, dir).Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := got.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		id, _ := l.DiffID()
		if d := m.Layers[i]; d.Digest != id || d.MediaType != types.OCIUncompressedLayer {
			t.Errorf("layer %d: %s %s, want %s uncompressed", i, d.MediaType, d.Digest, id)
		}
	}
	if c, _ := img.ConfigName(); m.Config.Digest != c {
		t.Errorf("config %s, want %s", m.Config.Digest, c)
	}
}
