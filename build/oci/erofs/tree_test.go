package erofs

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/erofscache"
)

// treeInputs are two cached bundles sharing their base layer and one whole
// bundle (erofs_cache off) with a layer of its own.
func treeInputs(t *testing.T) ([]bundle.TreeInput, [][]digest.Digest) {
	t.Helper()
	single := func(name, content string) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: testMtime}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, content); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	a, da := bundleOf(t, "a:1", bundleformat.Zstd, baseLayer(t), testLayer(t))
	b, db := bundleOf(t, "b:1", bundleformat.Gzip, baseLayer(t), single("b", "b\n"))
	c, dc := bundleOf(t, "c:1", bundleformat.None, single("c", "c\n"))
	return []bundle.TreeInput{
		{Namespace: "k8s.io", Name: "a", Compression: bundleformat.Zstd, File: a, ErofsCache: true},
		{Namespace: "k8s.io", Name: "b", Compression: bundleformat.Gzip, File: b, ErofsCache: true},
		{Namespace: "k8s.io", Name: "c", Compression: bundleformat.None, File: c},
	}, [][]digest.Digest{da, db, dc}
}

func writeTree(t *testing.T, inputs []bundle.TreeInput) ([]byte, *bundleformat.Manifest) {
	t.Helper()
	var buf bytes.Buffer
	data, err := bundle.WriteTreeCached(context.Background(), &buf, inputs, TreeCache(t.TempDir()))
	if err != nil {
		t.Fatalf("WriteTreeCached: %v", err)
	}
	m, err := bundleformat.ParseManifest(data)
	if err != nil {
		t.Fatalf("the tree's manifest does not parse: %v", err)
	}
	return buf.Bytes(), m
}

type tarFile struct {
	hdr  *tar.Header
	data []byte
}

func readTar(t *testing.T, b []byte) ([]string, map[string]tarFile) {
	t.Helper()
	var names []string
	files := map[string]tarFile{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names, files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		files["/"+strings.TrimSuffix(hdr.Name, "/")] = tarFile{hdr, data}
	}
}

// The tree holds each layer's blob and sidecar once per diffID, the cached
// bundles slim and the other whole, with a manifest that says so; two
// builds give the same bytes.
func TestWriteTreeCached(t *testing.T) {
	inputs, diffIDs := treeInputs(t)
	tree, m := writeTree(t, inputs)
	names, files := readTar(t, tree)
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("tar entries not sorted: %s before %s", names[i-1], names[i])
		}
	}
	for p, f := range files {
		want := int64(0o644)
		if f.hdr.Typeflag == tar.TypeDir {
			want = 0o755
		}
		if f.hdr.Mode != want || f.hdr.ModTime.Unix() != 0 || f.hdr.Uid != 0 || f.hdr.Gid != 0 {
			t.Errorf("%s: mode %o mtime %v owner %d:%d, want %o, 0, 0:0", p, f.hdr.Mode, f.hdr.ModTime, f.hdr.Uid, f.hdr.Gid, want)
		}
	}
	// a and b share the base: 3 distinct cached layers, a blob each and no
	// sidecar (the system partition's dm-verity covers the cache).
	var blobs []string
	for p, f := range files {
		if strings.HasPrefix(p, erofscache.Root+"/") && f.hdr.Typeflag == tar.TypeReg {
			blobs = append(blobs, p)
		}
	}
	if len(blobs) != 3 || slices.ContainsFunc(blobs, func(p string) bool { return !strings.HasSuffix(p, erofscache.BlobExt) }) {
		t.Errorf("tree holds cache files %q, want 3 blobs (3 diffIDs) and nothing else", blobs)
	}
	if len(m.Bundles) != 3 {
		t.Fatalf("manifest lists %d bundles, want 3", len(m.Bundles))
	}
	for i, e := range m.Bundles {
		f, ok := files[e.Path]
		if !ok {
			t.Fatalf("bundle %s is not in the tree", e.Path)
		}
		sum := sha256.Sum256(f.data)
		if int64(len(f.data)) != e.Size || hex.EncodeToString(sum[:]) != e.SHA256 {
			t.Errorf("%s: manifest says %d bytes sha256 %s, the tree holds %d bytes %x", e.Path, e.Size, e.SHA256, len(f.data), sum)
		}
		checkCached(t, e, files, diffIDs[i], inputs[i].ErofsCache)
	}
	again, m2 := writeTree(t, inputs)
	if !bytes.Equal(tree, again) {
		t.Error("two trees of the same bundles differ")
	}
	a, errA := m.Encode()
	b, errB := m2.Encode()
	if errA != nil || errB != nil || !bytes.Equal(a, b) {
		t.Errorf("two manifests of the same bundles differ (%v, %v)", errA, errB)
	}
}

// checkCached checks a manifest entry's cached layers against the tree.
func checkCached(t *testing.T, e bundleformat.Entry, files map[string]tarFile, diffIDs []digest.Digest, cached bool) {
	t.Helper()
	if !cached {
		if len(e.CachedLayers) != 0 {
			t.Errorf("%s: erofs_cache off, yet cached_layers %v", e.Path, e.CachedLayers)
		}
		return
	}
	if len(e.CachedLayers) != len(diffIDs) {
		t.Fatalf("%s: %d cached layers, want %d", e.Path, len(e.CachedLayers), len(diffIDs))
	}
	for i, c := range e.CachedLayers {
		want := path.Join(erofscache.Root, erofscache.RelPath(diffIDs[i]))
		if c.DiffID != diffIDs[i] || c.Path != want {
			t.Errorf("%s: cached layer %d is %s at %s, want %s at %s", e.Path, i, c.DiffID, c.Path, diffIDs[i], want)
		}
		blob, ok := files[c.Path]
		if !ok || int64(len(blob.data)) != c.Size {
			t.Errorf("%s: blob %s (%d bytes in the manifest) missing or of another size", e.Path, c.Path, c.Size)
		}
	}
}
