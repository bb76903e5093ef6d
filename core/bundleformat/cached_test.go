package bundleformat_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// Only the spelling JoinCachedLayers writes is accepted.
func TestParseCachedLayers(t *testing.T) {
	a, b := digest.FromString("a"), digest.FromString("b")
	good := bundleformat.JoinCachedLayers([]digest.Digest{b, a, b})
	ds, err := bundleformat.ParseCachedLayers(good)
	if err != nil || len(ds) != 2 || bundleformat.JoinCachedLayers(ds) != good {
		t.Fatalf("ParseCachedLayers(%q) = %v, %v; want both digests back", good, ds, err)
	}
	first, second := min(a.String(), b.String()), max(a.String(), b.String())
	for name, v := range map[string]string{
		"unsorted":       second + "," + first,
		"repeated":       first + "," + first,
		"empty":          "",
		"not sha256":     "sha512:" + strings.Repeat("0", 128),
		"not a digest":   "layer",
		"trailing comma": first + ",",
	} {
		if _, err := bundleformat.ParseCachedLayers(v); err == nil || !strings.Contains(err.Error(), bundleformat.AnnotationCachedLayers) {
			t.Errorf("%s: ParseCachedLayers(%q) = %v, want an error naming the annotation", name, v, err)
		}
	}
}

// slimBundle is the slim bundle the project's writer makes of a
// one-platform image, without its one layer, and that layer's digest.
func slimBundle(t *testing.T) ([]byte, digest.Digest) {
	t.Helper()
	full := realBundle(t, singleLayout(t), "hello:1.0")
	m, err := read(t, full, bundleformat.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	var layers []digest.Digest
	for d := range m.Layers {
		layers = append(layers, d)
	}
	if len(layers) != 1 {
		t.Fatalf("want one layer, got %v", layers)
	}
	f := filepath.Join(t.TempDir(), "hello.tar")
	if err := os.WriteFile(f, full, 0o644); err != nil {
		t.Fatal(err)
	}
	var slim bytes.Buffer
	if err := bundle.WriteSlim(&slim, f, layers); err != nil {
		t.Fatal(err)
	}
	return slim.Bytes(), layers[0]
}

// A slim bundle reads like the whole one, its cached layer listed; the
// annotation naming a blob that is no layer of the image is refused when
// every manifest is followed.
func TestReadMetadataSlim(t *testing.T) {
	slim, layer := slimBundle(t)
	for _, e := range entries(t, slim) {
		if e.hdr.Name == bundleformat.BlobName(layer) {
			t.Fatal("the slim bundle holds its cached layer")
		}
	}
	m, err := read(t, slim, bundleformat.Policy{})
	if err != nil {
		t.Fatalf("slim bundle refused: %v", err)
	}
	if !m.Cached[layer] || !slices.Equal(m.Images[0].CachedLayers, []digest.Digest{layer}) || len(m.Layers) != 1 {
		t.Errorf("cached %v, image's %v, layers %v; want layer %s cached", m.Cached, m.Images[0].CachedLayers, m.Layers, layer)
	}

	es := entries(t, slim)
	var idx ocispec.Index
	if err := json.Unmarshal(es[1].data, &idx); err != nil {
		t.Fatal(err)
	}
	other := digest.FromString("not a layer")
	idx.Manifests[0].Annotations[bundleformat.AnnotationCachedLayers] = bundleformat.JoinCachedLayers([]digest.Digest{layer, other})
	data, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	es[1].data, es[1].hdr.Size = data, int64(len(data))
	_, err = read(t, pack(t, es), bundleformat.Policy{})
	if err == nil || !strings.Contains(err.Error(), other.String()) || !strings.Contains(err.Error(), "no layer of the image") {
		t.Errorf("annotation naming %s: %v, want an error naming it as no layer of the image", other, err)
	}
	idx.Manifests[0].Annotations[bundleformat.AnnotationCachedLayers] = "sha256:x"
	data, _ = json.Marshal(idx)
	es[1].data, es[1].hdr.Size = data, int64(len(data))
	if _, err := read(t, pack(t, es), bundleformat.Policy{}); err == nil || !strings.Contains(err.Error(), bundleformat.AnnotationCachedLayers) {
		t.Errorf("a malformed annotation: %v, want an error naming it", err)
	}
}

// withCachedLayer is a real manifest whose first bundle lists one cached
// layer, edited by edit.
func withCachedLayer(t testing.TB, good []byte, edit func(l map[string]any)) []byte {
	t.Helper()
	l := map[string]any{"digest": digest.FromString("l").String(), "diff_id": digest.FromString("d").String(),
		"path": "/containerd/erofs-cache/sha256/ab/ab.erofs", "size": 8192, "root_hash": strings.Repeat("a", 64)}
	edit(l)
	var m map[string][]map[string]any
	if err := json.Unmarshal(good, &m); err != nil {
		t.Fatal(err)
	}
	m["bundles"][0]["cached_layers"] = []any{l}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The manifest's cached layers are checked like the rest of an entry.
func TestParseManifestCachedLayers(t *testing.T) {
	good := realManifest(t)
	with := func(edit func(l map[string]any)) []byte { return withCachedLayer(t, good, edit) }
	pm, err := bundleformat.ParseManifest(with(func(map[string]any) {}))
	if err != nil || len(pm.Bundles[0].CachedLayers) != 1 || pm.Bundles[0].CachedLayers[0].Size != 8192 {
		t.Fatalf("a valid cached layer: %+v, %v", pm, err)
	}
	for name, c := range map[string]struct {
		edit func(map[string]any)
		want string
	}{
		"bad digest":    {func(l map[string]any) { l["digest"] = "sha256:x" }, "cached_layers: digest"},
		"bad diff_id":   {func(l map[string]any) { l["diff_id"] = "" }, "diff_id"},
		"relative path": {func(l map[string]any) { l["path"] = "sha256/ab/ab.erofs" }, "clean absolute path"},
		"no size":       {func(l map[string]any) { delete(l, "size") }, "size 0"},
		"upper root":    {func(l map[string]any) { l["root_hash"] = strings.Repeat("A", 64) }, "root_hash"},
		"unknown field": {func(l map[string]any) { l["salt"] = "00" }, `unknown field "salt"`},
	} {
		if _, err := bundleformat.ParseManifest(with(c.edit)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}
