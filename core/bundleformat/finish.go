package bundleformat

import (
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// finish works out each image's manifests and their snapshot chains, from
// the JSON blobs read (all there: nothing is pending).
func (r *reader) finish() error {
	for i := range r.m.Images {
		im := &r.m.Images[i]
		descs, err := r.manifestsOf(im.Target, im.Platforms)
		if err != nil {
			return fmt.Errorf("image %s: %w", im.Name, err)
		}
		for _, desc := range descs {
			chain, err := r.chainID(im.Name, desc)
			if err != nil {
				return err
			}
			im.Manifests = append(im.Manifests, ImageManifest{Descriptor: desc, ChainID: chain})
		}
		if err := r.checkCached(im); err != nil {
			return err
		}
	}
	return nil
}

// checkCached refuses a cached layer that is no layer of the image. Only
// when every manifest was followed (no platform policy): otherwise the
// other platforms' layers are not known.
func (r *reader) checkCached(im *Image) error {
	if r.policy.Platform != nil {
		return nil
	}
	for _, c := range im.CachedLayers {
		if _, ok := r.m.Layers[c]; !ok {
			return fmt.Errorf("image %s: %s lists %s, which is no layer of the image", im.Name, AnnotationCachedLayers, c)
		}
	}
	return nil
}

// manifestsOf walks from target (narrowed to the held platforms, if any)
// through the indexes the policy follows and returns the manifests
// reached, in order, each once.
func (r *reader) manifestsOf(target ocispec.Descriptor, held []string) ([]ocispec.Descriptor, error) {
	var out []ocispec.Descriptor
	seen := map[digest.Digest]bool{}
	todo := []ocispec.Descriptor{target}
	for len(todo) > 0 {
		desc := todo[0]
		todo = todo[1:]
		if seen[desc.Digest] {
			continue
		}
		seen[desc.Digest] = true
		if !IsIndex(desc.MediaType) {
			out = append(out, desc)
			continue
		}
		var idx ocispec.Index
		if err := json.Unmarshal(r.m.JSON[desc.Digest], &idx); err != nil {
			return nil, fmt.Errorf("index %s: %w", desc.Digest, err)
		}
		var narrow []string
		if desc.Digest == target.Digest {
			narrow = held
		}
		chosen, err := r.choose(desc.Digest, r.m.Owner[desc.Digest], idx, narrow)
		if err != nil {
			return nil, err
		}
		todo = append(todo, chosen...)
	}
	return out, nil
}

// chainID checks a manifest's config against the policy's platform and its
// layers, and returns the chain ID its layers unpack to.
func (r *reader) chainID(name string, desc ocispec.Descriptor) (digest.Digest, error) {
	var mf ocispec.Manifest
	if err := json.Unmarshal(r.m.JSON[desc.Digest], &mf); err != nil {
		return "", fmt.Errorf("manifest %s of image %s: %w", desc.Digest, name, err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(r.m.JSON[mf.Config.Digest], &cfg); err != nil {
		return "", fmt.Errorf("config %s of image %s is not an image config: %w", mf.Config.Digest, name, err)
	}
	if p := r.policy.Platform; p != nil && cfg.OS != "" && !p.Match(cfg.Platform) {
		return "", fmt.Errorf("image %s is for %s, not this machine's platform", name, FormatPlatform(cfg.Platform))
	}
	var layers int
	for _, l := range mf.Layers {
		if IsLayer(l.MediaType) {
			layers++
		}
	}
	if len(cfg.RootFS.DiffIDs) != layers {
		return "", fmt.Errorf("image %s: config lists %d diff IDs for %d layers", name, len(cfg.RootFS.DiffIDs), layers)
	}
	return identity.ChainID(cfg.RootFS.DiffIDs), nil
}
