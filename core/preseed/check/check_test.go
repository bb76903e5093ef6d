package check_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/erofs"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/erofscache"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/preseed/bundlefile"
	"github.com/appliance-bundler/appliance/core/preseed/check"
	"github.com/appliance-bundler/appliance/tests/preseedtest"
)

const ns = "k8s.io"

// fixture is one bundle file written by the build's own code, what
// bundlefile reads of it, and its manifest entry as the build writes it.
type fixture struct {
	file  bundlefile.File
	meta  *bundlefile.Metadata
	size  int64
	entry bundleformat.Entry
}

// writeBundle writes a bundle of a random two-layer image; with cacheDir,
// the slim bundle the build makes for it, whose layers are left to that
// cache.
func writeBundle(t *testing.T, cacheDir string) fixture {
	t.Helper()
	img, err := preseedtest.RandomImage(1, 4096, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), ns)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "app.tar")
	if _, err := preseedtest.WriteBundle(path, preseedtest.Image{Name: "preseed.test/app:1", Image: img}); err != nil {
		t.Fatal(err)
	}
	var cached []bundleformat.CachedLayer
	if cacheDir != "" {
		cached = slim(t, img, path, cacheDir)
	}
	e, err := bundle.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	f := fixture{file: bundlefile.File{Namespace: ns, FileName: "app.tar", Path: path, Compression: bundleformat.None}}
	e.Namespace, e.Name, e.Path, e.Compression, e.CachedLayers = ns, "app", "/preseed/"+ns+"/app.tar", bundleformat.None, cached
	e.Size, e.SHA256 = fileSum(t, path)
	f.entry = *e

	s, err := bundlefile.OpenStream(func(p string) (io.ReadCloser, error) { return bundlefile.Open(p) }, f.file, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if f.meta, err = bundlefile.ReadMetadata(context.Background(), s, platforms.DefaultStrict()); err != nil {
		t.Fatal(err)
	}
	if f.size, err = s.Size(); err != nil {
		t.Fatal(err)
	}
	return f
}

// slim replaces the bundle at path by the slim bundle the build's
// converter writes. check reads only a cache entry's size and sidecar, so
// each entry is placed beforehand as a small file with a valid sidecar,
// which the converter reuses as it reuses any entry already in its cache:
// no mkfs.erofs runs.
func slim(t *testing.T, img v1.Image, path, cacheDir string) []bundleformat.CachedLayer {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		h, err := l.DiffID()
		if err != nil {
			t.Fatal(err)
		}
		blob := erofscache.BlobPath(cacheDir, digest.Digest(h.String()))
		sum := sha256.Sum256([]byte(h.String()))
		sc, err := erofscache.Sidecar{RootHash: hex.EncodeToString(sum[:]), HashOffset: erofscache.VerityBlockSize}.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(blob, make([]byte, 2*erofscache.VerityBlockSize), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(erofscache.SidecarPath(blob), sc, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	whole := path + ".whole"
	if err := os.Rename(path, whole); err != nil {
		t.Fatal(err)
	}
	entries, err := erofs.CacheBundle(context.Background(), whole, path, cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []bundleformat.CachedLayer
	for _, e := range entries {
		out = append(out, bundleformat.CachedLayer{Digest: e.Digest, DiffID: e.DiffID, Path: "/cache/" + e.Path, Size: e.Size, RootHash: e.RootHash})
	}
	return out
}

// clone copies an entry deep enough that a case may change any of its
// lists.
func clone(e bundleformat.Entry) bundleformat.Entry {
	e.Manifests = append([]bundleformat.ManifestImage(nil), e.Manifests...)
	e.References = append([]string(nil), e.References...)
	e.CachedLayers = append([]bundleformat.CachedLayer(nil), e.CachedLayers...)
	return e
}

func fileSum(t *testing.T, path string) (int64, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return int64(len(b)), hex.EncodeToString(sum[:])
}

// loadManifest writes entries as a preseed manifest and loads it.
func loadManifest(t *testing.T, entries ...bundleformat.Entry) *check.Manifest {
	t.Helper()
	b, err := (&bundleformat.Manifest{Bundles: entries}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "preseed.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := check.LoadManifest(p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func wantError(t *testing.T, what string, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error; want one with %q", what, wants)
		return
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q lacks %q", what, err, w)
		}
	}
}

// The build's own entry passes; each field that differs is named, and a
// bundle that differs in everything gets one error naming every field.
func TestManifestCheck(t *testing.T) {
	f := writeBundle(t, "")
	if err := loadManifest(t, f.entry).Check(f.file, &f.entry, f.meta, f.size); err != nil {
		t.Fatalf("the build's entry: %v", err)
	}
	cases := map[string]struct {
		change func(e *bundleformat.Entry)
		want   string
	}{
		"namespace": {func(e *bundleformat.Entry) { e.Namespace = "moby" }, "namespace is k8s.io, the manifest says moby"},
		"size":      {func(e *bundleformat.Entry) { e.Size++ }, "size is "},
		"index":     {func(e *bundleformat.Entry) { e.IndexDigest = digest.FromString("x") }, "index.json digest is "},
		"name": {func(e *bundleformat.Entry) {
			// The manifest's own parser wants its references to start with it.
			e.Reference, e.References[0] = "preseed.test/app:2", "preseed.test/app:2"
		}, "image name is preseed.test/app:1, the manifest says preseed.test/app:2"},
		"target":     {func(e *bundleformat.Entry) { e.Target.Size++ }, "target is "},
		"references": {func(e *bundleformat.Entry) { e.References = e.References[:1] }, "are registered but not in the manifest's references"},
		"manifests":  {func(e *bundleformat.Entry) { e.Manifests[0].Digest = digest.FromString("m") }, "manifests is "},
	}
	all := clone(f.entry)
	var wants []string
	for name, tc := range cases {
		e := clone(f.entry)
		tc.change(&e)
		tc.change(&all)
		wants = append(wants, tc.want)
		wantError(t, name, loadManifest(t, e).Check(f.file, &e, f.meta, f.size), "bundle "+f.file.Path+" differs from the preseed manifest", tc.want)
	}
	wantError(t, "all", loadManifest(t, all).Check(f.file, &all, f.meta, f.size), wants...)
}

// A bundle is found by its path, else by namespace and file name; one not
// listed is named; a listed one the tree lacks is absent, by its path.
func TestManifestEntryAndAbsent(t *testing.T) {
	f := writeBundle(t, "")
	gone := f.entry
	gone.Name, gone.Path = "gone", "/preseed/k8s.io/gone.tar"
	m := loadManifest(t, f.entry, gone)
	if e, err := m.Entry(f.file); err != nil || e.Path != f.entry.Path {
		t.Errorf("entry of %s by namespace and file name: %v, %v", f.file.Path, e, err)
	}
	byPath := bundlefile.File{Namespace: "elsewhere", FileName: "x.tar", Path: "/preseed/k8s.io/gone.tar"}
	if e, err := m.Entry(byPath); err != nil || e.Name != "gone" {
		t.Errorf("entry by path: %v, %v", e, err)
	}
	unlisted := bundlefile.File{Namespace: ns, FileName: "new.tar", Path: "/tree/k8s.io/new.tar"}
	_, err := m.Entry(unlisted)
	wantError(t, "unlisted", err, "bundle /tree/k8s.io/new.tar is not in the preseed manifest "+m.File())

	absent := m.Absent([]bundlefile.File{f.file, unlisted})
	if len(absent) != 1 || absent[0].File.Path != gone.Path || absent[0].File.FileName != "gone.tar" || absent[0].File.Namespace != ns {
		t.Fatalf("absent: %+v; want only %s", absent, gone.Path)
	}
	wantError(t, "absent", absent[0].Err, "bundle /preseed/k8s.io/gone.tar is listed in the preseed manifest "+m.File()+", but absent")
}

func TestManifestCheckSum(t *testing.T) {
	f := writeBundle(t, "")
	m := loadManifest(t, f.entry)
	if err := m.CheckSum(f.file, &f.entry, f.entry.SHA256); err != nil {
		t.Errorf("the build's sum: %v", err)
	}
	wantError(t, "other sum", m.CheckSum(f.file, &f.entry, strings.Repeat("0", 64)),
		"sha256 of the file is "+strings.Repeat("0", 64)+", the manifest says "+f.entry.SHA256, "its bytes changed after the build")
}

// A slim bundle's cached layers are found in the first directory that
// holds them; a missing entry, a missing sidecar under RequireVerity, a
// broken sidecar and another snapshotter each fail, naming the path.
func TestCacheFind(t *testing.T) {
	empty, cacheDir := t.TempDir(), t.TempDir()
	f := writeBundle(t, cacheDir)
	if len(f.meta.Cached) != 2 {
		t.Fatalf("the slim bundle leaves %d layers to the cache, want 2", len(f.meta.Cached))
	}
	c := check.Cache{Dirs: []string{empty, cacheDir}, RequireVerity: true, Snapshotter: node.ErofsSnapshotter}
	found, err := c.Find(f.file, f.meta)
	if err != nil || len(found) != 2 {
		t.Fatalf("find: %v, %v", found, err)
	}
	for _, cl := range found {
		if !strings.HasPrefix(cl.Blob, cacheDir+"/") || cl.Sidecar == nil || cl.Size != 2*erofscache.VerityBlockSize {
			t.Errorf("layer %s found as %+v; want the entry in %s with its sidecar", cl.Digest, cl, cacheDir)
		}
	}
	if err := loadManifest(t, f.entry).CheckCached(f.file, &f.entry, f.meta, found); err != nil {
		t.Errorf("the build's entry: %v", err)
	}

	other := c
	other.Snapshotter = "overlayfs"
	_, err = other.Find(f.file, f.meta)
	wantError(t, "overlayfs", err, "bundle "+f.file.Path+" leaves layers to the EROFS layer content cache", "not overlayfs")

	blob := found[0].Blob
	sidecar := erofscache.SidecarPath(blob)
	if err := os.Rename(sidecar, sidecar+".away"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Find(f.file, f.meta)
	wantError(t, "no sidecar", err, "dm-verity sidecar "+sidecar+" is missing")
	optional := c
	optional.RequireVerity = false
	if got, err := optional.Find(f.file, f.meta); err != nil || len(got) != 2 {
		t.Errorf("no sidecar, verity optional: %v, %v", got, err)
	}
	if err := os.WriteFile(sidecar, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = optional.Find(f.file, f.meta)
	wantError(t, "broken sidecar, verity optional", err, "invalid dm-verity sidecar")

	if err := os.Remove(blob); err != nil {
		t.Fatal(err)
	}
	_, err = c.Find(f.file, f.meta)
	wantError(t, "no entry", err, "is not in the EROFS layer content cache: "+filepath.Join(empty, strings.TrimPrefix(blob, cacheDir))+", "+blob+" missing")
}

// The cached layers must be the entry's, entry for entry.
func TestManifestCheckCached(t *testing.T) {
	cacheDir := t.TempDir()
	f := writeBundle(t, cacheDir)
	found, err := check.Cache{Dirs: []string{cacheDir}, Snapshotter: node.ErofsSnapshotter}.Find(f.file, f.meta)
	if err != nil {
		t.Fatal(err)
	}
	layer := f.entry.CachedLayers[1]
	for name, tc := range map[string]struct {
		change func(l []bundleformat.CachedLayer) []bundleformat.CachedLayer
		want   string
	}{
		"root hash": {func(l []bundleformat.CachedLayer) []bundleformat.CachedLayer {
			l[1].RootHash = strings.Repeat("0", 64)
			return l
		}, "has root hash " + layer.RootHash + ", the manifest says " + strings.Repeat("0", 64)},
		"size": {func(l []bundleformat.CachedLayer) []bundleformat.CachedLayer { l[1].Size++; return l }, "bytes, the manifest says"},
		"path": {func(l []bundleformat.CachedLayer) []bundleformat.CachedLayer {
			l[1].Path = "/cache/elsewhere"
			return l
		}, "the manifest says /cache/elsewhere"},
		"missing": {func(l []bundleformat.CachedLayer) []bundleformat.CachedLayer { return l[:1] }, "cached layers are "},
	} {
		e := clone(f.entry)
		e.CachedLayers = tc.change(e.CachedLayers)
		wantError(t, name, loadManifest(t, e).CheckCached(f.file, &e, f.meta, found), "differs from the preseed manifest", tc.want)
	}

	whole := writeBundle(t, "")
	e := whole.entry
	e.CachedLayers = f.entry.CachedLayers
	wantError(t, "whole bundle", loadManifest(t, e).CheckCached(whole.file, &e, whole.meta, nil), "it holds every layer, the manifest lists 2 cached layers")
}
