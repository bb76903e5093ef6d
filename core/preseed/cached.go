package preseed

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/erofscache"
	"github.com/appliance-bundler/appliance/core/node"
)

// cachedLayer is a layer of an unpacked manifest that the bundle leaves to
// the EROFS layer content cache (bundleformat.AnnotationCachedLayers).
type cachedLayer struct {
	digest, diffID digest.Digest
	// blob is the cache entry containerd's snapshotter will find: the
	// first cache directory that holds it, as containerd searches them.
	blob string
	size int64
	// sidecar is the blob's dm-verity sidecar, nil when none was read.
	sidecar *erofscache.Sidecar
}

// checkCached is part of the check phase, before anything is written: every
// layer of an unpacked manifest that the bundle leaves to the cache must
// have its entry in one of c.CacheDirs (and, with c.RequireVerity, its
// sidecar), and with a preseed manifest the cached layers must be the
// entry's. The cached layers then leave b.meta.Layers: they are neither
// ingested nor expected in the content store.
func (c Config) checkCached(b *bundle) error {
	if len(b.meta.Cached) == 0 {
		if b.entry != nil && len(b.entry.CachedLayers) > 0 {
			return fmt.Errorf("bundle %s differs from the preseed manifest %s: it holds every layer, the manifest lists %d cached layers",
				b.path, c.Manifest, len(b.entry.CachedLayers))
		}
		return nil
	}
	if c.Snapshotter != node.ErofsSnapshotter {
		return fmt.Errorf("bundle %s leaves layers to the EROFS layer content cache, which only the %s snapshotter serves, not %s",
			b.path, node.ErofsSnapshotter, c.Snapshotter)
	}
	b.cached = make(map[digest.Digest]cachedLayer)
	for _, im := range b.meta.images {
		layers, diffIDs, err := layersOf(b.meta, im)
		if err != nil {
			return fmt.Errorf("bundle %s: %w", b.path, err)
		}
		for i, l := range layers {
			if !b.meta.Cached[l.Digest] {
				continue
			}
			cl, err := c.findCached(l.Digest, diffIDs[i])
			if err != nil {
				return fmt.Errorf("bundle %s: %w", b.path, err)
			}
			b.cached[l.Digest] = cl
		}
	}
	if b.entry != nil {
		if err := c.matchEntry(b); err != nil {
			return err
		}
	}
	for d := range b.meta.Cached {
		delete(b.meta.Layers, d)
	}
	return nil
}

// findCached finds the cache entry of one layer, and its sidecar.
func (c Config) findCached(layer, diffID digest.Digest) (cachedLayer, error) {
	var tried []string
	for _, dir := range c.CacheDirs {
		blob := erofscache.BlobPath(dir, diffID)
		fi, err := os.Stat(blob)
		if errors.Is(err, fs.ErrNotExist) {
			tried = append(tried, blob)
			continue
		}
		if err != nil {
			return cachedLayer{}, fmt.Errorf("cached layer %s (diffID %s): failed to look up its cache entry: %w", layer, diffID, err)
		}
		if !fi.Mode().IsRegular() {
			return cachedLayer{}, fmt.Errorf("cached layer %s (diffID %s): cache entry %s is not a regular file", layer, diffID, blob)
		}
		cl := cachedLayer{digest: layer, diffID: diffID, blob: blob, size: fi.Size()}
		sc, err := erofscache.ReadSidecar(blob)
		switch {
		case err == nil:
			cl.sidecar = &sc
		case errors.Is(err, fs.ErrNotExist) && c.RequireVerity:
			return cachedLayer{}, fmt.Errorf("cached layer %s (diffID %s): dm-verity sidecar %s is missing", layer, diffID, erofscache.SidecarPath(blob))
		case c.RequireVerity || !errors.Is(err, fs.ErrNotExist):
			// A sidecar that is there but broken fails the mount even
			// when dm-verity is optional ("auto").
			return cachedLayer{}, fmt.Errorf("cached layer %s (diffID %s): %w", layer, diffID, err)
		}
		return cl, nil
	}
	return cachedLayer{}, fmt.Errorf("cached layer %s (diffID %s) is not in the EROFS layer content cache: %s missing",
		layer, diffID, strings.Join(tried, ", "))
}

// layersOf lists the layers of im's unpacked manifest with their diffIDs,
// in order. readMetadata checked both blobs already.
func layersOf(m *metadata, im imageRef) ([]ocispec.Descriptor, []digest.Digest, error) {
	var mf ocispec.Manifest
	if err := json.Unmarshal(m.JSON[im.Manifest.Digest], &mf); err != nil {
		return nil, nil, fmt.Errorf("manifest %s of image %s: %w", im.Manifest.Digest, im.Name, err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(m.JSON[mf.Config.Digest], &cfg); err != nil {
		return nil, nil, fmt.Errorf("config %s of image %s: %w", mf.Config.Digest, im.Name, err)
	}
	if len(mf.Layers) != len(cfg.RootFS.DiffIDs) {
		return nil, nil, fmt.Errorf("image %s: manifest %s has %d layers, its config %d diffIDs",
			im.Name, im.Manifest.Digest, len(mf.Layers), len(cfg.RootFS.DiffIDs))
	}
	return mf.Layers, cfg.RootFS.DiffIDs, nil
}

// matchEntry compares the cached layers with the preseed manifest entry's:
// the same layers as the annotation lists and, for each one unpacked, the
// same diffID, cache path (relative to its cache directory: tests place
// the cache elsewhere), size and root hash.
func (c Config) matchEntry(b *bundle) error {
	var diffs []string
	listed := make(map[digest.Digest]bundleformat.CachedLayer)
	for _, e := range b.entry.CachedLayers {
		listed[e.Digest] = e
	}
	var ann, man []string
	for d := range b.meta.Cached {
		ann = append(ann, d.String())
	}
	for d := range listed {
		man = append(man, d.String())
	}
	sort.Strings(ann)
	sort.Strings(man)
	if strings.Join(ann, ",") != strings.Join(man, ",") {
		diffs = append(diffs, fmt.Sprintf("cached layers are %s, the manifest says %s", strings.Join(ann, ", "), strings.Join(man, ", ")))
	}
	for _, cl := range sortedCached(b.cached) {
		e, ok := listed[cl.digest]
		if !ok {
			continue
		}
		if e.DiffID != cl.diffID {
			diffs = append(diffs, fmt.Sprintf("layer %s has diffID %s, the manifest says %s", cl.digest, cl.diffID, e.DiffID))
		}
		if !strings.HasSuffix(e.Path, "/"+erofscache.RelPath(cl.diffID)) {
			diffs = append(diffs, fmt.Sprintf("layer %s is cached at %s, the manifest says %s", cl.digest, cl.blob, e.Path))
		}
		if e.Size != cl.size {
			diffs = append(diffs, fmt.Sprintf("cache entry %s is %d bytes, the manifest says %d", cl.blob, cl.size, e.Size))
		}
		if cl.sidecar != nil && cl.sidecar.RootHash != e.RootHash {
			diffs = append(diffs, fmt.Sprintf("cache entry %s has root hash %s, the manifest says %s", cl.blob, cl.sidecar.RootHash, e.RootHash))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("bundle %s differs from the preseed manifest %s: %s", b.path, c.Manifest, strings.Join(diffs, "; "))
	}
	return nil
}

// sortedCached lists cached layers by digest, so errors come out in a
// fixed order.
func sortedCached(m map[digest.Digest]cachedLayer) []cachedLayer {
	out := make([]cachedLayer, 0, len(m))
	for _, cl := range m {
		out = append(out, cl)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].digest < out[j].digest })
	return out
}
