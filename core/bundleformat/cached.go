package bundleformat

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
)

// AnnotationCachedLayers, on the index.json descriptor of a bundle placed
// in an appliance, lists the layers the bundle does not hold because the
// appliance carries them converted in its EROFS layer content cache
// (core/erofscache): their blob digests, sorted, each once, joined by
// commas. Readers accept those layers as absent; any other layer missing
// from the bundle is still an error.
const AnnotationCachedLayers = "dev.appliance-bundler.erofs-cached"

// JoinCachedLayers spells layer digests as AnnotationCachedLayers holds
// them: sorted, each once, joined by commas.
func JoinCachedLayers(ds []digest.Digest) string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.String())
	}
	slices.Sort(out)
	return strings.Join(slices.Compact(out), ",")
}

// ParseCachedLayers reads the value of AnnotationCachedLayers. Only the
// spelling JoinCachedLayers writes is accepted: non-empty, valid sha256
// digests, sorted, no repeats.
func ParseCachedLayers(v string) ([]digest.Digest, error) {
	var out []digest.Digest
	for _, s := range strings.Split(v, ",") {
		d, err := digest.Parse(s)
		if err != nil || d.Algorithm() != digest.SHA256 {
			return nil, fmt.Errorf("annotation %s %q: %q is not a sha256 digest", AnnotationCachedLayers, v, s)
		}
		out = append(out, d)
	}
	if JoinCachedLayers(out) != v {
		return nil, fmt.Errorf("annotation %s %q: want the digests sorted, each once", AnnotationCachedLayers, v)
	}
	return out, nil
}

// CachedLayer is one layer of a bundle served from the appliance's EROFS
// layer content cache instead of the bundle, in the preseed manifest.
type CachedLayer struct {
	// Digest is the layer blob's digest, as the manifest lists it.
	Digest digest.Digest `json:"digest"`
	// DiffID is the uncompressed layer's digest: the cache key.
	DiffID digest.Digest `json:"diff_id"`
	// Path is the EROFS blob's absolute path in the appliance.
	Path string `json:"path"`
	// Size is the blob's size in bytes, dm-verity hash tree included.
	Size int64 `json:"size"`
	// RootHash is the blob's dm-verity root hash (64 lower-case hex).
	RootHash string `json:"root_hash"`
}

// Validate checks a cached layer is complete and well-formed.
func (c *CachedLayer) Validate() error {
	if err := c.Digest.Validate(); err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	if err := c.DiffID.Validate(); err != nil {
		return fmt.Errorf("layer %s: diff_id: %w", c.Digest, err)
	}
	switch {
	case !path.IsAbs(c.Path) || path.Clean(c.Path) != c.Path:
		return fmt.Errorf("layer %s: path %q is not a clean absolute path", c.Digest, c.Path)
	case c.Size <= 0:
		return fmt.Errorf("layer %s: size %d", c.Digest, c.Size)
	case len(c.RootHash) != 64 || strings.Trim(c.RootHash, "0123456789abcdef") != "":
		return fmt.Errorf("layer %s: root_hash %q is not 64 lower-case hex digits", c.Digest, c.RootHash)
	}
	return nil
}

// validateCached checks an entry's cached layers: each valid, each layer
// once.
func validateCached(cs []CachedLayer) error {
	seen := map[digest.Digest]bool{}
	for i := range cs {
		if err := cs[i].Validate(); err != nil {
			return fmt.Errorf("cached_layers: %w", err)
		}
		if seen[cs[i].Digest] {
			return fmt.Errorf("cached_layers: layer %s listed twice", cs[i].Digest)
		}
		seen[cs[i].Digest] = true
	}
	return nil
}

// cachedOf reads AnnotationCachedLayers of an index.json descriptor's
// annotations: nil without it.
func cachedOf(annotations map[string]string) ([]digest.Digest, error) {
	v, ok := annotations[AnnotationCachedLayers]
	if !ok {
		return nil, nil
	}
	if v == "" {
		return nil, errors.New("annotation " + AnnotationCachedLayers + " is empty")
	}
	return ParseCachedLayers(v)
}
