// Package layouttest builds small, real OCI image layouts for tests with the
// project's image builder: a single-platform image, a multi-platform index,
// and an index narrowed to some platforms as the fetcher writes it (the
// original index blob, bundleformat.AnnotationPlatforms on index.json's
// descriptor, the other platforms' blobs absent); and, for tests that need
// no real content, random images and indexes naming their platforms. It is
// test-only and must not be used by a build tool.
package layouttest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/appliance-bundler/appliance/build/oci/imagebuild"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// Image builds a one-layer image for platform ("os/arch[/variant]") whose
// one file, /bin/hello, holds content.
func Image(t testing.TB, platform, content string) v1.Image {
	t.Helper()
	p, err := bundleformat.ParsePlatform(platform)
	if err != nil {
		t.Fatal(err)
	}
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
	img, err := imagebuild.Build(imagebuild.Spec{Layers: []string{tarPath}, OS: p.OS, Architecture: p.Architecture,
		Variant: p.Variant, Entrypoint: []string{"/bin/hello"}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// RandomImage is an image of two random 2 KiB layers whose config names
// platform p.
func RandomImage(t testing.TB, p v1.Platform) v1.Image {
	t.Helper()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// RandomIndex is an index of one RandomImage per platform, in order, each
// descriptor naming its platform.
func RandomIndex(t testing.TB, platforms ...v1.Platform) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, p := range platforms {
		adds = append(adds, mutate.IndexAddendum{Add: RandomImage(t, p), Descriptor: v1.Descriptor{Platform: &p}})
	}
	return mutate.AppendManifests(empty.Index, adds...)
}

// Single writes the layout of one image for platform and returns its
// directory.
func Single(t testing.TB, platform, content string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	if _, err := imagebuild.WriteLayout(dir, Image(t, platform, content)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Index writes the layout of an image index with one image per platform,
// each holding its platform's name, and returns its directory.
func Index(t testing.TB, platforms ...string) string {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, s := range platforms {
		p, err := v1.ParsePlatform(s)
		if err != nil {
			t.Fatal(err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: Image(t, s, s+"\n"), Descriptor: v1.Descriptor{Platform: p}})
	}
	dir := filepath.Join(t.TempDir(), "layout")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendIndex(mutate.AppendManifests(empty.Index, adds...)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TopIndex reads index.json of a layout.
func TopIndex(t testing.TB, dir string) *v1.IndexManifest {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	im, err := v1.ParseIndexManifest(f)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// Blob is the path of a blob of a layout.
func Blob(dir string, h v1.Hash) string { return filepath.Join(dir, "blobs", h.Algorithm, h.Hex) }

// Narrow narrows the index of the layout at dir to platforms in place, as
// the fetcher writes a narrowed pull: it annotates index.json's descriptor
// and removes the blobs only other platforms' manifests need. It returns
// the blobs removed.
func Narrow(t testing.TB, dir string, platforms ...string) []v1.Hash {
	t.Helper()
	top := TopIndex(t, dir)
	data, err := os.ReadFile(Blob(dir, top.Manifests[0].Digest))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	keep, drop := map[v1.Hash]bool{}, map[v1.Hash]bool{}
	for _, d := range idx.Manifests {
		into := drop
		if slices.Contains(platforms, d.Platform.String()) {
			into = keep
		}
		into[d.Digest] = true
		for _, h := range manifestBlobs(t, dir, d.Digest) {
			into[h] = true
		}
	}
	var removed []v1.Hash
	for h := range drop {
		if !keep[h] {
			if err := os.Remove(Blob(dir, h)); err != nil {
				t.Fatal(err)
			}
			removed = append(removed, h)
		}
	}
	slices.Sort(platforms)
	if top.Manifests[0].Annotations == nil {
		top.Manifests[0].Annotations = map[string]string{}
	}
	top.Manifests[0].Annotations[bundleformat.AnnotationPlatforms] = strings.Join(platforms, ",")
	WriteTopIndex(t, dir, top)
	return removed
}

// WriteTopIndex writes index.json of a layout.
func WriteTopIndex(t testing.TB, dir string, im *v1.IndexManifest) {
	t.Helper()
	out, err := json.Marshal(im)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// manifestBlobs lists the config and layers of a manifest of a layout.
func manifestBlobs(t testing.TB, dir string, h v1.Hash) []v1.Hash {
	t.Helper()
	f, err := os.Open(Blob(dir, h))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := v1.ParseManifest(f)
	if err != nil {
		t.Fatal(err)
	}
	out := []v1.Hash{m.Config.Digest}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}
