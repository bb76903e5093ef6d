package validate_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/bundle/layouttest"
	"github.com/appliance-bundler/appliance/build/oci/validate"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// newLayout builds a one-layer image with imagebuild and returns its layout.
func newLayout(t *testing.T) (string, *validate.Result) {
	t.Helper()
	out := layouttest.Single(t, "linux/amd64", "#!/bin/true\n")
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
	for _, comp := range bundleformat.Compressions() {
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
	if err := bundle.Write(&buf, dir, "hello", bundleformat.None); err == nil {
		t.Error("a reference without tag was accepted")
	}
}

// editJSON rewrites the JSON file at p through edit.
func editJSON(t *testing.T, p string, edit func(m map[string]any)) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLayoutStrictJSON: an index or manifest with a field the image-spec
// does not define, or with data after its JSON value, is refused, naming
// the layout and the field; every field the spec does define is accepted.
func TestLayoutStrictJSON(t *testing.T) {
	for name, c := range map[string]struct {
		breakIt func(t *testing.T, dir string, res *validate.Result)
		want    string
	}{
		"unknown field in index.json": {func(t *testing.T, dir string, _ *validate.Result) {
			editJSON(t, filepath.Join(dir, "index.json"), func(m map[string]any) { m["manifestz"] = []any{} })
		}, `unknown field "manifestz"`},
		"unknown descriptor field": {func(t *testing.T, dir string, _ *validate.Result) {
			editJSON(t, filepath.Join(dir, "index.json"), func(m map[string]any) {
				m["manifests"].([]any)[0].(map[string]any)["sise"] = 1
			})
		}, `unknown field "sise"`},
		"trailing data after index.json": {func(t *testing.T, dir string, _ *validate.Result) {
			f, err := os.OpenFile(filepath.Join(dir, "index.json"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString(`{"schemaVersion":2}`); err != nil {
				t.Fatal(err)
			}
		}, "data after the JSON value"},
	} {
		t.Run(name, func(t *testing.T) {
			dir, res := newLayout(t)
			c.breakIt(t, dir, res)
			_, err := validate.Layout(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("want an error naming %s and %q, got %v", dir, c.want, err)
			}
		})
	}
	// Every optional field of the spec's index, descriptor and platform.
	dir, res := newLayout(t)
	editJSON(t, filepath.Join(dir, "index.json"), func(m map[string]any) {
		m["artifactType"] = "application/vnd.example+type"
		m["annotations"] = map[string]any{"a": "b"}
		m["subject"] = map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": res.Manifests[0], "size": 1}
		d := m["manifests"].([]any)[0].(map[string]any)
		d["urls"] = []any{"https://example.invalid/blob"}
		d["data"] = ""
		d["artifactType"] = "application/vnd.example+type"
		d["platform"] = map[string]any{"architecture": "amd64", "os": "linux", "os.version": "1", "os.features": []any{"f"}, "variant": "v1", "features": []any{"g"}}
	})
	if _, err := validate.Layout(dir); err != nil {
		t.Errorf("a layout using the spec's optional fields is refused: %v", err)
	}
}

// narrowed is a two-platform index layout narrowed to linux/amd64 as the
// fetcher writes it.
func narrowed(t *testing.T) string {
	t.Helper()
	dir := layouttest.Index(t, "linux/amd64", "linux/arm64")
	layouttest.Narrow(t, dir, "linux/amd64")
	return dir
}

// setPlatforms sets AnnotationPlatforms on index.json's descriptor.
func setPlatforms(t *testing.T, dir, v string) {
	t.Helper()
	im := layouttest.TopIndex(t, dir)
	im.Manifests[0].Annotations = map[string]string{bundleformat.AnnotationPlatforms: v}
	layouttest.WriteTopIndex(t, dir, im)
}

// A layout narrowed to some platforms is followed only into theirs: the
// others' absence is fine, a listed one's is not, and the annotation is
// held to its spelling and to indexes.
func TestLayoutNarrowed(t *testing.T) {
	dir := narrowed(t)
	res, err := validate.Layout(dir)
	if err != nil {
		t.Fatalf("a narrowed layout is refused: %v", err)
	}
	if len(res.Manifests) != 1 || len(res.Blobs) != 4 {
		t.Errorf("narrowed layout: %d manifests, %d blobs; want 1 and 4", len(res.Manifests), len(res.Blobs))
	}
	for name, c := range map[string]struct {
		breakIt func(t *testing.T, dir string)
		want    string
	}{
		"listed platform's config missing": {func(t *testing.T, dir string) {
			for d, mt := range res.Blobs {
				if strings.Contains(mt, "config") {
					_ = os.Remove(blobOf(dir, d))
				}
			}
		}, "is missing"},
		"listed platform not in the index": {func(t *testing.T, dir string) {
			setPlatforms(t, dir, "linux/amd64,linux/s390x")
		}, "has no manifest for linux/s390x"},
		"listed platform left out": {func(t *testing.T, dir string) {
			setPlatforms(t, dir, "linux/arm64")
		}, "is missing"},
		"unsorted": {func(t *testing.T, dir string) {
			setPlatforms(t, dir, "linux/arm64,linux/amd64")
		}, "sorted, each once"},
		"empty": {func(t *testing.T, dir string) { setPlatforms(t, dir, "") }, `platform ""`},
	} {
		t.Run(name, func(t *testing.T) {
			dir := narrowed(t)
			c.breakIt(t, dir)
			_, err := validate.Layout(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("want an error naming %s and %q, got %v", dir, c.want, err)
			}
		})
	}
	single, _ := newLayout(t)
	setPlatforms(t, single, "linux/amd64")
	if _, err := validate.Layout(single); err == nil || !strings.Contains(err.Error(), "only an image index may") {
		t.Errorf("the annotation on a manifest: got %v", err)
	}
}

// A narrowed bundle holds exactly the listed platforms' blobs: one of
// another platform is an unreachable extra.
func TestBundleNarrowedExtraBlob(t *testing.T) {
	dir := layouttest.Index(t, "linux/amd64", "linux/arm64")
	var b bytes.Buffer
	if err := bundle.Write(&b, dir, "hello:1.0", bundleformat.None, "linux/amd64"); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "b.tar")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	br, err := validate.Bundle(p, t.TempDir())
	if err != nil {
		t.Fatalf("a narrowed bundle is refused: %v", err)
	}
	// Append arm64's manifest as a blob entry: valid tar, wrong content.
	whole, err := validate.Layout(dir)
	if err != nil {
		t.Fatal(err)
	}
	var extra string
	for _, m := range whole.Manifests {
		if m != br.Manifests[0] {
			extra = m
		}
	}
	data, err := os.ReadFile(blobOf(dir, extra))
	if err != nil {
		t.Fatal(err)
	}
	tarBytes := b.Bytes()[:b.Len()-1024] // drop the end-of-archive blocks
	var tail bytes.Buffer
	tw := tar.NewWriter(&tail)
	if err := tw.WriteHeader(bundleformat.Header(bundleformat.BlobPrefix+strings.TrimPrefix(extra, "sha256:"), int64(len(data)))); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, append(tarBytes, tail.Bytes()...), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := validate.Bundle(p, t.TempDir()); err == nil || !strings.Contains(err.Error(), "want exactly the reachable blobs") {
		t.Fatalf("an unlisted platform's manifest in a narrowed bundle: got %v", err)
	}
}

// setCached lists digests in bundleformat.AnnotationCachedLayers of the
// layout's index.json descriptor, as a slim bundle's.
func setCached(t *testing.T, dir, v string) {
	t.Helper()
	im := layouttest.TopIndex(t, dir)
	if im.Manifests[0].Annotations == nil {
		im.Manifests[0].Annotations = map[string]string{}
	}
	im.Manifests[0].Annotations[bundleformat.AnnotationCachedLayers] = v
	layouttest.WriteTopIndex(t, dir, im)
}

// A slim layout may lack the layers its annotation lists, and only those;
// the annotation must name layers of the image, spelled as written.
func TestLayoutCachedLayers(t *testing.T) {
	slim := func(t *testing.T) (string, string) {
		dir, res := newLayout(t)
		var layer string
		for d, mt := range res.Blobs {
			if bundleformat.IsLayer(mt) {
				layer = d
			}
		}
		setCached(t, dir, layer)
		if err := os.Remove(blobOf(dir, layer)); err != nil {
			t.Fatal(err)
		}
		return dir, layer
	}
	dir, layer := slim(t)
	res, err := validate.Layout(dir)
	if err != nil {
		t.Fatalf("a slim layout is refused: %v", err)
	}
	if _, ok := res.Blobs[layer]; ok || len(res.Blobs) != 2 {
		t.Errorf("slim layout's blobs %v: want the manifest and config, not the cached layer", res.Blobs)
	}
	other := "sha256:" + strings.Repeat("0", 64)
	for name, c := range map[string]struct {
		value func(layer string) string
		want  string
	}{
		"not a layer of the image": {func(l string) string { return other + "," + l }, "no layer of the image"},
		"unsorted":                 {func(l string) string { return l + "," + other }, "sorted, each once"},
		"not a digest":             {func(string) string { return "layer" }, "not a sha256 digest"},
		"cached layer not listed":  {func(string) string { return other }, "is missing"},
	} {
		t.Run(name, func(t *testing.T) {
			dir, layer := slim(t)
			setCached(t, dir, c.value(layer))
			_, err := validate.Layout(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("want an error naming %s and %q, got %v", dir, c.want, err)
			}
		})
	}
}
