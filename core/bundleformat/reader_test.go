package bundleformat_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"runtime/metrics"
	"strings"
	"testing"

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
