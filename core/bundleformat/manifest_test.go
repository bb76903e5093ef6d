package bundleformat_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// realManifest is the preseed manifest the project's writer makes of a
// bundle of each kind of compression (a single image, an index, a single
// image) and of an index narrowed to linux/arm64.
func realManifest(t testing.TB) []byte {
	t.Helper()
	dir := t.TempDir()
	var inputs []bundle.TreeInput
	for i, layoutDir := range []string{singleLayout(t), indexLayout(t), singleLayout(t), indexLayout(t)} {
		comp := bundleformat.Compressions()[i%3]
		var platforms []string
		if i == 3 {
			platforms = []string{"linux/arm64"}
		}
		f := filepath.Join(dir, fmt.Sprintf("b%d%s", i, comp.Ext()))
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := bundle.Write(out, layoutDir, "hello:1."+string(rune('0'+i)), comp, platforms...); err != nil {
			t.Fatal(err)
		}
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, bundle.TreeInput{Namespace: "k8s.io", Name: "b" + string(rune('0'+i)), Compression: comp, File: f})
	}
	var tree bytes.Buffer
	m, err := bundle.WriteTree(&tree, inputs)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The writer's manifest parses back to the same bytes.
func TestManifestRoundTrip(t *testing.T) {
	data := realManifest(t)
	m, err := bundleformat.ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Bundles) != 4 || len(m.Bundles[1].Manifests) != 2 || len(m.Bundles[1].References) != 4 {
		t.Fatalf("bundles: %+v", m.Bundles)
	}
	// The narrowed index: its own digest, arm64's manifest only.
	n := m.Bundles[3]
	repo := "docker.io/library/hello"
	want := []string{repo + ":1.3", repo + "@" + n.Target.Digest.String(), repo + "@" + n.Manifests[0].Digest.String()}
	if n.Target.Annotations[bundleformat.AnnotationPlatforms] != "linux/arm64" || len(n.Manifests) != 1 ||
		n.Manifests[0].Platform.Architecture != "arm64" || !slices.Equal(n.References, want) {
		t.Errorf("narrowed bundle: %+v, want references %q", n, want)
	}
	again, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, data) {
		t.Errorf("re-encoded manifest differs:\n%s\nwant:\n%s", again, data)
	}
}

// Each way a manifest can be wrong is refused with its reason.
func TestParseManifestRejects(t *testing.T) {
	good := realManifest(t)
	edit := func(f func(b []map[string]any)) string {
		var m map[string][]map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		f(m["bundles"])
		out, _ := json.Marshal(m)
		return string(out)
	}
	for name, c := range map[string]struct{ data, want string }{
		"no bundles":       {`{}`, `no "bundles" list`},
		"unknown field":    {`{"bundles": [], "extra": 1}`, `unknown field "extra"`},
		"trailing data":    {`{"bundles": []}x`, "data after the JSON value"},
		"not JSON":         {`{"bundles": [`, "not valid JSON"},
		"duplicate":        {edit(func(b []map[string]any) { b[1]["path"], b[1]["compression"] = b[0]["path"], b[0]["compression"] }), "twice"},
		"no sha256":        {edit(func(b []map[string]any) { b[0]["sha256"] = "" }), "64 lowercase hex"},
		"wrong extension":  {edit(func(b []map[string]any) { b[0]["compression"] = "zstd" }), "extension of compression"},
		"relative path":    {edit(func(b []map[string]any) { b[0]["path"] = "k8s.io/b.tar" }), "clean absolute path"},
		"bad target":       {edit(func(b []map[string]any) { b[0]["target"].(map[string]any)["digest"] = "sha256:x" }), "target"},
		"unknown in entry": {edit(func(b []map[string]any) { b[0]["sise"] = 1 }), `unknown field "sise"`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := bundleformat.ParseManifest([]byte(c.data))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want %q, got %v", c.want, err)
			}
		})
	}
}
