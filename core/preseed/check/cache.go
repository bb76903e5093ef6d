package check

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/erofscache"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/preseed/bundlefile"
)

// Cache is the EROFS layer content cache as containerd's snapshotter will
// search it.
type Cache struct {
	// Dirs are the cache's directories, in containerd's order.
	Dirs []string
	// RequireVerity makes a layer without its dm-verity sidecar fail, as
	// containerd's dmverity_mode "on" would fail its mount.
	RequireVerity bool
	// Snapshotter is the one the bundles unpack into: only the erofs
	// snapshotter serves the cache.
	Snapshotter string
}

// CachedLayer is a layer of an unpacked manifest that the bundle leaves to
// the EROFS layer content cache (bundleformat.AnnotationCachedLayers).
type CachedLayer struct {
	Digest, DiffID digest.Digest
	// Blob is the cache entry containerd's snapshotter will find: the
	// first cache directory that holds it, as containerd searches them.
	Blob string
	Size int64
	// Sidecar is the blob's dm-verity sidecar, nil when there is none.
	Sidecar *erofscache.Sidecar
}

// Find finds the cache entry (and sidecar) of every layer of the bundle's
// unpacked manifests that the bundle leaves to the cache, sorted by
// digest. It fails on the first one missing, naming the bundle, the layer,
// its diffID and every path tried.
func (c Cache) Find(f bundlefile.File, meta *bundlefile.Metadata) ([]CachedLayer, error) {
	if len(meta.Cached) == 0 {
		return nil, nil
	}
	if c.Snapshotter != node.ErofsSnapshotter {
		return nil, fmt.Errorf("bundle %s leaves layers to the EROFS layer content cache, which only the %s snapshotter serves, not %s",
			f.Path, node.ErofsSnapshotter, c.Snapshotter)
	}
	found := make(map[digest.Digest]CachedLayer)
	for _, im := range meta.Unpacked {
		layers, diffIDs, err := meta.LayersOf(im)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", f.Path, err)
		}
		for i, l := range layers {
			if !meta.Cached[l.Digest] {
				continue
			}
			cl, err := c.find(l.Digest, diffIDs[i])
			if err != nil {
				return nil, fmt.Errorf("bundle %s: %w", f.Path, err)
			}
			found[l.Digest] = cl
		}
	}
	out := make([]CachedLayer, 0, len(found))
	for _, cl := range found {
		out = append(out, cl)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// find finds the cache entry of one layer, and its sidecar.
func (c Cache) find(layer, diffID digest.Digest) (CachedLayer, error) {
	var tried []string
	for _, dir := range c.Dirs {
		blob := erofscache.BlobPath(dir, diffID)
		fi, err := os.Stat(blob)
		if errors.Is(err, fs.ErrNotExist) {
			tried = append(tried, blob)
			continue
		}
		if err != nil {
			return CachedLayer{}, fmt.Errorf("cached layer %s (diffID %s): failed to look up its cache entry: %w", layer, diffID, err)
		}
		if !fi.Mode().IsRegular() {
			return CachedLayer{}, fmt.Errorf("cached layer %s (diffID %s): cache entry %s is not a regular file", layer, diffID, blob)
		}
		cl := CachedLayer{Digest: layer, DiffID: diffID, Blob: blob, Size: fi.Size()}
		sc, err := erofscache.ReadSidecar(blob)
		switch {
		case err == nil:
			cl.Sidecar = &sc
		case errors.Is(err, fs.ErrNotExist) && c.RequireVerity:
			return CachedLayer{}, fmt.Errorf("cached layer %s (diffID %s): dm-verity sidecar %s is missing", layer, diffID, erofscache.SidecarPath(blob))
		case c.RequireVerity || !errors.Is(err, fs.ErrNotExist):
			// A sidecar that is there but broken fails the mount even
			// when dm-verity is optional ("auto").
			return CachedLayer{}, fmt.Errorf("cached layer %s (diffID %s): %w", layer, diffID, err)
		}
		return cl, nil
	}
	return CachedLayer{}, fmt.Errorf("cached layer %s (diffID %s) is not in the EROFS layer content cache: %s missing",
		layer, diffID, strings.Join(tried, ", "))
}

// CheckCached compares the bundle's cached layers (found by Cache.Find)
// with its entry e: the same layers as its annotation lists and, for each
// one unpacked, the same diffID, cache path (relative to its cache
// directory: tests place the cache elsewhere), size and root hash.
func (m *Manifest) CheckCached(f bundlefile.File, e *bundleformat.Entry, meta *bundlefile.Metadata, cached []CachedLayer) error {
	var d differences
	if len(meta.Cached) == 0 && len(e.CachedLayers) > 0 {
		d.add("it holds every layer, the manifest lists %d cached layers", len(e.CachedLayers))
		return m.differ(f, d)
	}
	listed := make(map[digest.Digest]bundleformat.CachedLayer)
	want := make(map[digest.Digest]bool)
	for _, l := range e.CachedLayers {
		listed[l.Digest] = l
		want[l.Digest] = true
	}
	if is, says := sortedDigests(meta.Cached), sortedDigests(want); is != says {
		d.add("cached layers are %s, the manifest says %s", is, says)
	}
	for _, cl := range cached {
		l, ok := listed[cl.Digest]
		if !ok {
			continue
		}
		if l.DiffID != cl.DiffID {
			d.add("layer %s has diffID %s, the manifest says %s", cl.Digest, cl.DiffID, l.DiffID)
		}
		if !strings.HasSuffix(l.Path, "/"+erofscache.RelPath(cl.DiffID)) {
			d.add("layer %s is cached at %s, the manifest says %s", cl.Digest, cl.Blob, l.Path)
		}
		if l.Size != cl.Size {
			d.add("cache entry %s is %d bytes, the manifest says %d", cl.Blob, cl.Size, l.Size)
		}
		if cl.Sidecar != nil && cl.Sidecar.RootHash != l.RootHash {
			d.add("cache entry %s has root hash %s, the manifest says %s", cl.Blob, cl.Sidecar.RootHash, l.RootHash)
		}
	}
	return m.differ(f, d)
}
