package erofscache_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-bundler/appliance/core/erofscache"
)

const diffID = digest.Digest("sha256:ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd")

// The layout containerd's erofs snapshotter looks up (docs/snapshotters/erofs.md,
// "Layer Content Cache"): <dir>/<algo>/<xx>/<hex>.erofs.
func TestBlobPath(t *testing.T) {
	got := erofscache.BlobPath("/cache", diffID)
	want := "/cache/sha256/ab/" + diffID.Encoded() + ".erofs"
	if got != want {
		t.Fatalf("BlobPath = %s, want %s", got, want)
	}
	if s := erofscache.SidecarPath(got); s != want+".dmverity" {
		t.Fatalf("SidecarPath = %s", s)
	}
}

func TestSidecarRoundTrip(t *testing.T) {
	s := erofscache.Sidecar{RootHash: strings.Repeat("0f", 32), HashOffset: 8192}
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"roothash\": \"" + s.RootHash + "\",\n  \"hashoffset\": 8192\n}"
	if string(b) != want {
		t.Fatalf("Encode = %q, want %q", b, want)
	}
	dir := t.TempDir()
	blob := filepath.Join(dir, "x.erofs")
	if err := os.WriteFile(erofscache.SidecarPath(blob), b, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := erofscache.ReadSidecar(blob)
	if err != nil || got != s {
		t.Fatalf("ReadSidecar = %+v, %v", got, err)
	}
}

func TestSidecarRejects(t *testing.T) {
	for name, in := range map[string]string{
		"unknown field":  `{"roothash":"` + strings.Repeat("0f", 32) + `","hashoffset":4096,"salt":"00"}`,
		"trailing data":  `{"roothash":"` + strings.Repeat("0f", 32) + `","hashoffset":4096} {}`,
		"short hash":     `{"roothash":"0f","hashoffset":4096}`,
		"upper-case":     `{"roothash":"` + strings.Repeat("0F", 32) + `","hashoffset":4096}`,
		"not hex":        `{"roothash":"` + strings.Repeat("zz", 32) + `","hashoffset":4096}`,
		"unaligned":      `{"roothash":"` + strings.Repeat("0f", 32) + `","hashoffset":4097}`,
		"zero offset":    `{"roothash":"` + strings.Repeat("0f", 32) + `","hashoffset":0}`,
		"missing fields": `{}`,
	} {
		if _, err := erofscache.ParseSidecar([]byte(in)); err == nil {
			t.Errorf("%s: ParseSidecar accepted %s", name, in)
		}
	}
}

func TestReadSidecarMissingNamesPath(t *testing.T) {
	blob := filepath.Join(t.TempDir(), "y.erofs")
	_, err := erofscache.ReadSidecar(blob)
	if err == nil || !strings.Contains(err.Error(), blob+".dmverity") {
		t.Fatalf("ReadSidecar of a missing sidecar: %v", err)
	}
}
