// Package images_test checks every image and bundle that images/ builds:
// each layout against the OCI image-layout spec (hello is an index of
// linux/amd64 and linux/arm64: each config and binary for its platform), each bundle against
// docs/bundle-format.md, that building the same image twice gives the same
// digest and bytes, and that the preseed tree's manifest describes its files
// (slim bundles, their layers in the EROFS layer content cache).
package images_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-bundler/appliance/build/oci/validate"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/erofscache"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

type image struct {
	name, ref string
	// platforms of the image's manifests, in index order; more than one:
	// the image is an index.
	platforms []string
	// bundled are the platforms the bundles hold; fewer than platforms:
	// the index is narrowed in them, and <name>_BUNDLE_ALL holds all.
	bundled []string
}

var images = []image{
	{"HELLO", "docker.io/library/hello:1.0", []string{"linux/amd64", "linux/arm64"}, []string{"linux/amd64"}},
	{"HELLO_WEB", "localhost/appliance/hello-web:1.0", []string{"linux/amd64"}, []string{"linux/amd64"}},
	{"PAUSE", "localhost/appliance/pause:1.0", []string{"linux/amd64"}, []string{"linux/amd64"}},
}

// elfMachines is the ELF machine of a Go binary built for each architecture.
var elfMachines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// manifestInfo is what a layout's manifest says and holds.
type manifestInfo struct {
	digest, platform string
}

// inspect reads each manifest of a valid layout: its config's platform must
// be the one its index describes, and the one file of its one layer (the Go
// binary) an ELF file for that architecture.
func inspect(t *testing.T, dir string, res *validate.Result) []manifestInfo {
	t.Helper()
	descs := res.Index
	if bundleformat.IsIndex(res.Index[0].MediaType) {
		var idx struct{ Manifests []validate.Descriptor }
		readJSON(t, dir, res.Index[0].Digest, &idx)
		descs = nil
		for _, d := range idx.Manifests {
			if slices.Contains(res.Manifests, d.Digest) {
				descs = append(descs, d)
			}
		}
	}
	var out []manifestInfo
	for _, d := range descs {
		var m struct {
			Config validate.Descriptor
			Layers []validate.Descriptor
		}
		readJSON(t, dir, d.Digest, &m)
		var cfg struct{ OS, Architecture string }
		readJSON(t, dir, m.Config.Digest, &cfg)
		p := cfg.OS + "/" + cfg.Architecture
		if d.Platform == nil || d.Platform.OS+"/"+d.Platform.Architecture != p {
			t.Errorf("%s: manifest %s is described as %+v, its config says %s", dir, d.Digest, d.Platform, p)
		}
		if len(m.Layers) != 1 {
			t.Fatalf("%s: manifest %s has %d layers, want 1", dir, d.Digest, len(m.Layers))
		}
		if got, want := binaryMachine(t, blobPath(dir, m.Layers[0].Digest)), elfMachines[cfg.Architecture]; got != want {
			t.Errorf("%s: the binary of %s image %s is for %s, want %s", dir, p, d.Digest, got, want)
		}
		out = append(out, manifestInfo{d.Digest, p})
	}
	return out
}

func blobPath(dir, digest string) string {
	return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

func readJSON(t *testing.T, dir, digest string, v any) {
	t.Helper()
	data, err := os.ReadFile(blobPath(dir, digest))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("blob %s of %s: %v", digest, dir, err)
	}
}

// binaryMachine reads the one regular file of a gzip layer as an ELF file.
func binaryMachine(t *testing.T, layer string) elf.Machine {
	t.Helper()
	f, err := os.Open(layer)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("layer %s: %v", layer, err)
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("layer %s: no regular file: %v", layer, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		ef, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("layer %s: %s is not ELF: %v", layer, hdr.Name, err)
		}
		return ef.Machine
	}
}

func platformsOf(infos []manifestInfo) []string {
	var out []string
	for _, m := range infos {
		out = append(out, m.platform)
	}
	return out
}

func TestLayoutsValidAndReproducible(t *testing.T) {
	for _, img := range images {
		t.Run(img.name, func(t *testing.T) {
			dir := runfile.Path(t, img.name+"_IMAGE")
			a, err := validate.Layout(dir)
			if err != nil {
				t.Fatal(err)
			}
			b, err := validate.Layout(runfile.Path(t, img.name+"_IMAGE_AGAIN"))
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Index) != 1 || len(b.Index) != 1 {
				t.Fatalf("index.json names %d and %d images, want 1", len(a.Index), len(b.Index))
			}
			if a.Index[0].Digest != b.Index[0].Digest {
				t.Fatalf("the same image built twice has digests %s and %s", a.Index[0].Digest, b.Index[0].Digest)
			}
			isIndex := bundleformat.IsIndex(a.Index[0].MediaType)
			if isIndex != (len(img.platforms) > 1) {
				t.Fatalf("index.json names a %s, want an index: %v", a.Index[0].MediaType, len(img.platforms) > 1)
			}
			// A config and one layer per manifest, and the index.
			wantBlobs := 3 * len(img.platforms)
			if isIndex {
				wantBlobs++
			}
			if len(a.Blobs) != wantBlobs {
				t.Errorf("layout has %d blobs, want %d", len(a.Blobs), wantBlobs)
			}
			infos := inspect(t, dir, a)
			if got := platformsOf(infos); !slices.Equal(got, img.platforms) {
				t.Fatalf("layout's platforms %v, want %v", got, img.platforms)
			}
			t.Logf("%s %s %s", img.name, a.Index[0].MediaType, a.Index[0].Digest)
			for _, m := range infos {
				t.Logf("%s manifest %s %s", img.name, m.platform, m.digest)
			}
		})
	}
}

func fileSHA(t *testing.T, p string) (string, int64) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

func TestBundles(t *testing.T) {
	for _, img := range images {
		t.Run(img.name, func(t *testing.T) {
			layout, err := validate.Layout(runfile.Path(t, img.name+"_IMAGE"))
			if err != nil {
				t.Fatal(err)
			}
			narrowed := len(img.bundled) < len(img.platforms)
			kinds := []string{"_BUNDLE", "_BUNDLE_AGAIN", "_BUNDLE_ZSTD"}
			if narrowed {
				kinds = append(kinds, "_BUNDLE_ALL")
			}
			for _, kind := range kinds {
				want, annotation := img.bundled, ""
				if narrowed {
					annotation = strings.Join(img.bundled, ",")
				}
				if kind == "_BUNDLE_ALL" {
					want, annotation = img.platforms, ""
				}
				scratch := t.TempDir()
				res, err := validate.Bundle(runfile.Path(t, img.name+kind), scratch)
				if err != nil {
					t.Fatalf("%s: %v", kind, err)
				}
				if res.Reference != img.ref {
					t.Errorf("%s names %q, want %q", kind, res.Reference, img.ref)
				}
				// Narrowed or not, the bundle holds the image's own
				// index blob: its digest is the image's.
				if res.Index[0].Digest != layout.Index[0].Digest {
					t.Errorf("%s holds %s, the image is %s", kind, res.Index[0].Digest, layout.Index[0].Digest)
				}
				if got := res.Index[0].Annotations[bundleformat.AnnotationPlatforms]; got != annotation {
					t.Errorf("%s: index.json says platforms %q, want %q", kind, got, annotation)
				}
				if got := platformsOf(inspect(t, scratch, res.Result)); !slices.Equal(got, want) {
					t.Errorf("%s holds platforms %v, want %v", kind, got, want)
				}
			}
			a, size := fileSHA(t, runfile.Path(t, img.name+"_BUNDLE"))
			b, _ := fileSHA(t, runfile.Path(t, img.name+"_BUNDLE_AGAIN"))
			if a != b {
				t.Errorf("bundles of the same image differ: %s and %s", a, b)
			}
			t.Logf("%s bundle %d bytes, sha256 %s", img.name, size, a)
			if narrowed {
				_, all := fileSHA(t, runfile.Path(t, img.name+"_BUNDLE_ALL"))
				if all <= size {
					t.Errorf("the bundle of all platforms has %d bytes, the one of %v %d", all, img.bundled, size)
				}
				t.Logf("%s bundle of all platforms %d bytes", img.name, all)
			}
		})
	}
}

// TestPreseedTree checks the tree tar's entries against its JSON manifest
// and the manifest against the bundles it names: each bundle placed slim,
// its layers in the EROFS layer content cache with their sidecars.
func TestPreseedTree(t *testing.T) {
	data, err := os.ReadFile(runfile.Path(t, "PRESEED_JSON"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundleformat.ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Bundles) != len(images) {
		t.Fatalf("want %d bundles in the manifest, got %d", len(images), len(m.Bundles))
	}
	files := treeFiles(t, runfile.Path(t, "PRESEED_TAR"))
	blobs := map[string]bool{}
	for _, img := range images {
		want := "/containerd/preseed/k8s.io/" + strings.ReplaceAll(strings.ToLower(img.name), "_", "-") + ".tar"
		i := slices.IndexFunc(m.Bundles, func(e bundleformat.Entry) bool { return e.Path == want })
		if i < 0 {
			t.Errorf("the manifest has no entry at %s", want)
			continue
		}
		e := m.Bundles[i]
		if e.Namespace != "k8s.io" || e.Reference != img.ref {
			t.Errorf("manifest entry %d: %+v, want namespace k8s.io, reference %s", i, e, img.ref)
		}
		held := files[e.Path]
		sum := sha256.Sum256(held)
		if e.SHA256 != hex.EncodeToString(sum[:]) || e.Size != int64(len(held)) {
			t.Errorf("%s: manifest says sha256 %s size %d, the tree holds %x %d", e.Path, e.SHA256, e.Size, sum, len(held))
		}
		checkSlim(t, img, e, held, files)
		for _, c := range e.CachedLayers {
			blobs[c.Path] = true
		}
		layout, err := validate.Layout(runfile.Path(t, img.name+"_IMAGE"))
		if err != nil {
			t.Fatal(err)
		}
		if e.Target.Digest.String() != layout.Index[0].Digest {
			t.Errorf("%s: target %s, the image is %s", e.Path, e.Target.Digest, layout.Index[0].Digest)
		}
		var wantManifests, gotManifests []string
		for _, m := range inspect(t, runfile.Path(t, img.name+"_IMAGE"), layout) {
			if slices.Contains(img.bundled, m.platform) {
				wantManifests = append(wantManifests, m.digest+" "+m.platform)
			}
		}
		for _, m := range e.Manifests {
			p := "(no platform)"
			if m.Platform != nil {
				p = bundleformat.FormatPlatform(*m.Platform)
			}
			gotManifests = append(gotManifests, m.Digest.String()+" "+p)
		}
		if !slices.Equal(gotManifests, wantManifests) {
			t.Errorf("%s: manifests %v, want %v", e.Path, gotManifests, wantManifests)
		}
		if !strings.HasPrefix(e.IndexDigest.String(), "sha256:") {
			t.Errorf("%s: no index digest", e.Path)
		}
	}
	if len(files) != len(images)+len(blobs) {
		t.Errorf("tree holds %d files, want %d bundles and %d cache blobs", len(files), len(images), len(blobs))
	}
	logCacheSize(t, m)
}

// treeFiles reads the regular files of a tree tar by absolute path; every
// entry must be owned by 0:0 with mtime 0.
func treeFiles(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Uid != 0 || hdr.Gid != 0 || hdr.ModTime.Unix() != 0 {
			t.Errorf("%s: owner %d:%d mtime %v", hdr.Name, hdr.Uid, hdr.Gid, hdr.ModTime)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files["/"+hdr.Name] = b
	}
}

// checkSlim checks that the tree's bundle is the whole bundle without its
// cached layers, each of which the tree holds with a sidecar.
func checkSlim(t *testing.T, img image, e bundleformat.Entry, held []byte, files map[string][]byte) {
	t.Helper()
	if len(e.CachedLayers) == 0 {
		t.Errorf("%s: no cached layers: every production bundle has erofs_cache", e.Path)
		return
	}
	slim := filepath.Join(t.TempDir(), "slim.tar")
	if err := os.WriteFile(slim, held, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := validate.Bundle(slim, t.TempDir())
	if err != nil {
		t.Fatalf("%s: %v", e.Path, err)
	}
	var digests []digest.Digest
	for _, c := range e.CachedLayers {
		digests = append(digests, c.Digest)
		if int64(len(files[c.Path])) != c.Size {
			t.Errorf("%s: cache blob %s is %d bytes in the tree, the manifest says %d", e.Path, c.Path, len(files[c.Path]), c.Size)
		}
		if c.Path != path.Join(erofscache.Root, erofscache.RelPath(c.DiffID)) {
			t.Errorf("%s: cache entry %+v is not at its diffID's path", e.Path, c)
		}
		// No sidecar: containerd mounts the blob from its file, under the
		// system partition's dm-verity (core/node.DmverityMode).
		if _, ok := files[erofscache.SidecarPath(c.Path)]; ok {
			t.Errorf("%s: cache blob %s has a dm-verity sidecar in the tree", e.Path, c.Path)
		}
	}
	if got := res.Index[0].Annotations[bundleformat.AnnotationCachedLayers]; got != bundleformat.JoinCachedLayers(digests) {
		t.Errorf("%s: index.json lists cached layers %q, the manifest %v", e.Path, got, digests)
	}
	full, err := validate.Bundle(runfile.Path(t, img.name+"_BUNDLE"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Entries) != len(res.Entries)+len(digests) || res.Index[0].Digest != full.Index[0].Digest {
		t.Errorf("%s: slim bundle has %d entries for %s, the whole one %d for %s, with %d layers cached",
			e.Path, len(res.Entries), res.Index[0].Digest, len(full.Entries), full.Index[0].Digest, len(digests))
	}
}

// logCacheSize logs what the cache costs: the sum of its blobs (hash trees
// included) against the sum of the distinct uncompressed layers.
func logCacheSize(t *testing.T, m *bundleformat.Manifest) {
	t.Helper()
	var blobs, layers int64
	seen := map[string]bool{}
	for _, e := range m.Bundles {
		for _, c := range e.CachedLayers {
			if seen[c.Path] {
				continue
			}
			seen[c.Path] = true
			blobs += c.Size
			layers += uncompressedSize(t, c)
		}
	}
	t.Logf("EROFS cache: %d blobs, %d bytes; distinct uncompressed layers %d bytes", len(seen), blobs, layers)
}

// uncompressedSize is the size of a cached layer's tar, found in the whole
// bundle of the image that holds it.
func uncompressedSize(t *testing.T, c bundleformat.CachedLayer) int64 {
	t.Helper()
	for _, img := range images {
		f, err := os.Open(runfile.Path(t, img.name+"_BUNDLE"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		tr := tar.NewReader(f)
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			if hdr.Name != bundleformat.BlobName(c.Digest) {
				continue
			}
			zr, err := gzip.NewReader(tr)
			if err != nil {
				t.Fatalf("layer %s: %v", c.Digest, err)
			}
			h := sha256.New()
			n, err := io.Copy(h, zr)
			if err != nil || "sha256:"+hex.EncodeToString(h.Sum(nil)) != c.DiffID.String() {
				t.Fatalf("layer %s: uncompresses to %x (%v), the manifest gives diffID %s", c.Digest, h.Sum(nil), err, c.DiffID)
			}
			return n
		}
	}
	t.Fatalf("layer %s is in no whole bundle", c.Digest)
	return 0
}
