package erofs

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// CacheBundle converts every layer of the images the bundle file in holds
// into cacheDir (once per diffID: a layer already there is reused) and
// writes to slimOut the bundle without those layer blobs, its index.json
// listing them in bundleformat.AnnotationCachedLayers. It returns the
// cache entries in the order of the manifests' layers, each layer once.
func CacheBundle(ctx context.Context, in, slimOut, cacheDir string) ([]Entry, error) {
	layers, err := convertAll(ctx, in, cacheDir)
	if err != nil {
		return nil, err
	}
	cached := make([]digest.Digest, 0, len(layers))
	for _, e := range layers {
		cached = append(cached, e.Digest)
	}
	if err := writeFile(slimOut, func(w io.Writer) error { return bundle.WriteSlim(w, in, cached) }); err != nil {
		return nil, err
	}
	return layers, nil
}

// planned is a layer to convert: its descriptor and diffID.
type planned struct {
	desc   ocispec.Descriptor
	diffID digest.Digest
}

// convertAll reads the bundle's metadata, then converts each layer blob as
// the tar reaches it.
func convertAll(ctx context.Context, in, cacheDir string) ([]Entry, error) {
	f, err := os.Open(in)
	if err != nil {
		return nil, fmt.Errorf("failed to open bundle %s: %w", in, err)
	}
	defer f.Close()
	rc, err := bundle.Decompress(f)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", in, err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	m, err := bundleformat.ReadMetadata(ctx, tr, bundleformat.Policy{})
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", in, err)
	}
	if len(m.Cached) != 0 {
		return nil, fmt.Errorf("bundle %s: already slim (%s): want the whole bundle", in, bundleformat.AnnotationCachedLayers)
	}
	order, plan, err := planLayers(m)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", in, err)
	}
	done := map[digest.Digest]Entry{}
	for len(done) < len(plan) {
		hdr, err := bundleformat.Next(tr)
		if err == io.EOF {
			return nil, fmt.Errorf("bundle %s: %s", in, missingLayers(order, done))
		}
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", in, err)
		}
		d, _ := bundleformat.BlobDigest(hdr.Name)
		p, ok := plan[d]
		if !ok || hdr.Size != p.desc.Size {
			if ok {
				return nil, fmt.Errorf("bundle %s: layer %s is %d bytes, its descriptor says %d", in, d, hdr.Size, p.desc.Size)
			}
			continue
		}
		if done[d], err = ConvertLayer(ctx, cacheDir, tr, p.desc, p.diffID); err != nil {
			return nil, fmt.Errorf("bundle %s: %w", in, err)
		}
	}
	out := make([]Entry, 0, len(order))
	for _, d := range order {
		out = append(out, done[d])
	}
	return out, nil
}

// planLayers pairs every layer of the followed manifests with its diffID
// from the config, in the manifests' order, each layer once.
func planLayers(m *bundleformat.Metadata) ([]digest.Digest, map[digest.Digest]planned, error) {
	var order []digest.Digest
	plan := map[digest.Digest]planned{}
	for _, im := range m.Images {
		for _, mf := range im.Manifests {
			var man ocispec.Manifest
			if err := json.Unmarshal(m.JSON[mf.Descriptor.Digest], &man); err != nil {
				return nil, nil, fmt.Errorf("manifest %s: %w", mf.Descriptor.Digest, err)
			}
			var cfg ocispec.Image
			if err := json.Unmarshal(m.JSON[man.Config.Digest], &cfg); err != nil {
				return nil, nil, fmt.Errorf("config %s: %w", man.Config.Digest, err)
			}
			i := 0
			for _, l := range man.Layers {
				if !bundleformat.IsLayer(l.MediaType) {
					continue
				}
				diffID := cfg.RootFS.DiffIDs[i]
				i++
				if p, seen := plan[l.Digest]; seen {
					if p.diffID != diffID {
						return nil, nil, fmt.Errorf("layer %s has diffID %s in one config and %s in another", l.Digest, p.diffID, diffID)
					}
					continue
				}
				plan[l.Digest] = planned{desc: l, diffID: diffID}
				order = append(order, l.Digest)
			}
		}
	}
	return order, plan, nil
}

func missingLayers(order []digest.Digest, done map[digest.Digest]Entry) string {
	var missing []digest.Digest
	for _, d := range order {
		if _, ok := done[d]; !ok {
			missing = append(missing, d)
		}
	}
	return fmt.Sprintf("layers missing from the bundle: %v", missing)
}

// writeFile writes path through a temporary file next to it and a rename.
func writeFile(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".slim-*")
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

// TreeCache is the EROFS layer content cache in dir for
// bundle.WriteTreeCached: CacheBundle, its entries as the preseed
// manifest's cached layers (paths relative to dir).
func TreeCache(dir string) *bundle.TreeCache {
	return &bundle.TreeCache{Dir: dir, Convert: func(ctx context.Context, in, slim string) ([]bundleformat.CachedLayer, error) {
		entries, err := CacheBundle(ctx, in, slim, dir)
		if err != nil {
			return nil, err
		}
		out := make([]bundleformat.CachedLayer, 0, len(entries))
		for _, e := range entries {
			out = append(out, bundleformat.CachedLayer{Digest: e.Digest, DiffID: e.DiffID, Path: e.Path, Size: e.Size, RootHash: e.RootHash})
		}
		return out, nil
	}}
}
