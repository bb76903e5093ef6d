package bundleformat_test

import (
	"archive/tar"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"runtime/metrics"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/build/oci/bundle/layouttest"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

func read(t testing.TB, b []byte, p bundleformat.Policy) (*bundleformat.Metadata, error) {
	t.Helper()
	return bundleformat.ReadMetadata(t.Context(), tar.NewReader(bytes.NewReader(b)), p)
}

// A bundle of a two-platform index, as the writer makes it: every manifest
// without a platform choice, the machine's one with it; no layer read.
func TestReadMetadataIndex(t *testing.T) {
	b := realBundle(t, indexLayout(t), "hello:1.0")
	all, err := read(t, b, bundleformat.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Images) != 1 || all.Images[0].Name != "docker.io/library/hello:1.0" || len(all.Images[0].Manifests) != 2 {
		t.Fatalf("every manifest: %+v", all.Images)
	}
	arm, err := read(t, b, bundleformat.Policy{Platform: platform{"linux", "arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	got := arm.Images[0].Manifests
	if len(got) != 1 || got[0].Descriptor.Platform.Architecture != "arm64" || got[0].ChainID == "" {
		t.Fatalf("arm64: %+v", got)
	}
	if len(arm.Layers) != 1 || len(all.Layers) != 2 {
		t.Errorf("layers: arm64 %d, all %d; want 1 and 2", len(arm.Layers), len(all.Layers))
	}
	if _, err := read(t, b, bundleformat.Policy{Platform: platform{"linux", "s390x"}}); err == nil ||
		!strings.Contains(err.Error(), "no manifest for this machine's platform") {
		t.Errorf("s390x: want no manifest for this platform, got %v", err)
	}
}

// Each break of the format is refused with a reason naming the entry.
func TestReadMetadataRejects(t *testing.T) {
	good := entries(t, realBundle(t, singleLayout(t), "hello:1.0"))
	for name, c := range map[string]struct {
		edit func([]entry) []entry
		want string
	}{
		"symlink": {func(e []entry) []entry {
			e[2].hdr.Typeflag, e[2].hdr.Linkname, e[2].hdr.Size, e[2].data = tar.TypeSymlink, "/etc/passwd", 0, nil
			return e
		}, "is a symlink"},
		"escaping name": {func(e []entry) []entry { e[2].hdr.Name = "blobs/../../x"; return e }, "escapes the bundle"},
		"other name":    {func(e []entry) []entry { e[2].hdr.Name = "blobs/sha256/ABC"; return e }, "unexpected entry"},
		"index first":   {func(e []entry) []entry { e[0], e[1] = e[1], e[0]; return e }, "first entry"},
		"no index":      {func(e []entry) []entry { return e[:1] }, "missing index.json"},
		"missing blob":  {func(e []entry) []entry { return e[:2] }, "missing blob"},
		"wrong blob":    {func(e []entry) []entry { e[2].data = append([]byte{}, e[2].data...); e[2].data[0] ^= 1; return e }, "does not match its digest"},
	} {
		t.Run(name, func(t *testing.T) {
			es := append([]entry{}, good...)
			_, err := read(t, pack(t, c.edit(es)), bundleformat.Policy{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want %q, got %v", c.want, err)
			}
		})
	}
}

// A header may claim any size up to the limit; memory must follow the
// bytes actually there, not the claim: a few kilobytes of input claiming a
// 4 MiB index.json must not make the reader allocate 4 MiB.
func TestReadMetadataClaimedSize(t *testing.T) {
	es := entries(t, realBundle(t, singleLayout(t), "hello:1.0"))
	b := pack(t, es[:2])
	// Cut index.json's data short of what its header now claims.
	copy(b[1024+124:1024+136], fmt.Sprintf("%011o\x00", bundleformat.MaxJSONBlob))
	b = fixChecksums(b[:1024+512+100])
	var err error
	got := allocated(func() { _, err = read(t, b, bundleformat.Policy{}) })
	if err == nil || !strings.Contains(err.Error(), `"index.json"`) || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Fatalf("want a broken tar naming index.json, got %v", err)
	}
	if got > 256<<10 {
		t.Fatalf("reading %d bytes allocated %d bytes", len(b), got)
	}
}

// allocated is the number of heap bytes allocated while f runs.
func allocated(f func()) uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	f()
	metrics.Read(s)
	return s[0].Value.Uint64() - before
}

// A bundle of a two-platform index narrowed to arm64, as the writer makes
// it: the original index is the target, only arm64 is followed with or
// without a platform choice, and another machine is told what the bundle
// holds.
func TestReadMetadataNarrowed(t *testing.T) {
	dir := indexLayout(t)
	b := realBundle(t, dir, "hello:1.0", "linux/arm64")
	whole, err := read(t, realBundle(t, dir, "hello:1.0"), bundleformat.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	target := whole.Images[0].Target.Digest
	for name, p := range map[string]bundleformat.Policy{"all": {}, "arm64": {Platform: platform{"linux", "arm64"}}} {
		m, err := read(t, b, p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		im := m.Images[0]
		if im.Target.Digest != target || !slices.Equal(im.Platforms, []string{"linux/arm64"}) {
			t.Errorf("%s: target %s narrowed to %q, want %s narrowed to linux/arm64", name, im.Target.Digest, im.Platforms, target)
		}
		if len(im.Manifests) != 1 || im.Manifests[0].Descriptor.Platform.Architecture != "arm64" || len(m.Layers) != 1 {
			t.Errorf("%s: manifests %+v, %d layers; want arm64's and its one layer", name, im.Manifests, len(m.Layers))
		}
	}
	want := fmt.Sprintf("image docker.io/library/hello:1.0: the bundle holds only linux/arm64 of index %s, none for this machine's platform", target)
	if _, err := read(t, b, bundleformat.Policy{Platform: platform{"linux", "amd64"}}); err == nil || err.Error() != want {
		t.Errorf("amd64 machine: got %v, want %q", err, want)
	}
}

// setPlatforms returns a bundle's entries with index.json's descriptor
// carrying AnnotationPlatforms v.
func setPlatforms(t *testing.T, es []entry, v string) []entry {
	t.Helper()
	var idx ocispec.Index
	if err := json.Unmarshal(es[1].data, &idx); err != nil {
		t.Fatal(err)
	}
	idx.Manifests[0].Annotations[bundleformat.AnnotationPlatforms] = v
	data, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]entry{}, es...)
	out[1].data, out[1].hdr.Size = data, int64(len(data))
	return out
}

// A narrowing annotation that does not fit the bundle is refused.
func TestReadMetadataNarrowedRejects(t *testing.T) {
	narrowed := entries(t, realBundle(t, indexLayout(t), "hello:1.0", "linux/arm64"))
	single := entries(t, realBundle(t, singleLayout(t), "hello:1.0"))
	for name, c := range map[string]struct {
		es []entry
		// want is the error without a platform choice; onArm64 for
		// an arm64 machine, if another.
		want, onArm64 string
	}{
		"platform the index lacks": {setPlatforms(t, narrowed, "linux/arm64,linux/s390x"), "has no manifest for linux/s390x, which index.json's " + bundleformat.AnnotationPlatforms + " lists", ""},
		"platform left out":        {setPlatforms(t, narrowed, "linux/amd64"), "missing blob", "the bundle holds only linux/amd64 of index"},
		"on a manifest":            {setPlatforms(t, single, "linux/amd64"), "only an image index is narrowed to platforms", ""},
		"unsorted":                 {setPlatforms(t, narrowed, "linux/arm64,linux/amd64"), "sorted, each once", ""},
		"empty":                    {setPlatforms(t, narrowed, ""), `platform ""`, ""},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := read(t, pack(t, c.es), bundleformat.Policy{}); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("every platform: want %q, got %v", c.want, err)
			}
			want := cmp.Or(c.onArm64, c.want)
			if _, err := read(t, pack(t, c.es), bundleformat.Policy{Platform: platform{"linux", "arm64"}}); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("arm64: want %q, got %v", want, err)
			}
		})
	}
}

// With a machine platform, the best match among the listed platforms is
// chosen, not the index's best: the index prefers linux/arm64 (no variant)
// to linux/arm64/v8 on this matcher, the bundle holds only v8.
func TestReadMetadataNarrowedBestAmongListed(t *testing.T) {
	dir := layouttest.Index(t, "linux/arm64", "linux/arm64/v8")
	arm64 := bundleformat.Policy{Platform: platform{"linux", "arm64"}}
	for _, c := range []struct {
		platforms []string
		want      string
	}{{nil, ""}, {[]string{"linux/arm64/v8"}, "v8"}, {[]string{"linux/arm64", "linux/arm64/v8"}, ""}} {
		m, err := read(t, realBundle(t, dir, "hello:1.0", c.platforms...), arm64)
		if err != nil {
			t.Fatalf("%v: %v", c.platforms, err)
		}
		if got := m.Images[0].Manifests; len(got) != 1 || got[0].Descriptor.Platform.Variant != c.want {
			t.Errorf("bundle narrowed to %v: chose %+v, want variant %q", c.platforms, got, c.want)
		}
	}
}
