package bundle

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// formatPlatform spells a platform as bundleformat does: os/arch[/variant].
func formatPlatform(p *v1.Platform) string {
	return bundleformat.FormatPlatform(ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant})
}

// canonicalPlatforms checks platforms and spells them as
// bundleformat.AnnotationPlatforms lists them: sorted, each once.
func canonicalPlatforms(platforms []string) ([]string, error) {
	var ps []ocispec.Platform
	for _, s := range platforms {
		p, err := bundleformat.ParsePlatform(s)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	if len(ps) == 0 {
		return nil, nil
	}
	return strings.Split(bundleformat.JoinPlatforms(ps), ","), nil
}

// keptPlatforms returns the platforms of an index the bundle keeps (sorted),
// or nil to keep all the layout holds: want, each of which the layout must
// hold, or the platforms an already narrowed layout holds.
func keptPlatforms(layoutDir string, top v1.Descriptor, want []string) ([]string, error) {
	wanted, err := canonicalPlatforms(want)
	if err != nil {
		return nil, fmt.Errorf("failed to bundle %s: %w", layoutDir, err)
	}
	annotation, narrowed := top.Annotations[bundleformat.AnnotationPlatforms]
	if !top.MediaType.IsIndex() {
		if narrowed {
			return nil, fmt.Errorf("failed to bundle %s: index.json's descriptor of %s (%s) carries %s, which only an image index may", layoutDir, top.Digest, top.MediaType, bundleformat.AnnotationPlatforms)
		}
		return nil, checkSinglePlatform(layoutDir, top, wanted)
	}
	var have []string
	if narrowed {
		ps, err := bundleformat.ParsePlatforms(annotation)
		if err != nil {
			return nil, fmt.Errorf("failed to bundle %s: index.json: %w", layoutDir, err)
		}
		have = strings.Split(bundleformat.JoinPlatforms(ps), ",")
	} else if have, err = indexPlatforms(layoutDir, top); err != nil {
		return nil, err
	}
	if wanted == nil && narrowed {
		return have, nil
	}
	for _, w := range wanted {
		if !slices.Contains(have, w) {
			return nil, fmt.Errorf("failed to bundle %s for platform %s: the layout holds only %s of index %s", layoutDir, w, strings.Join(have, ", "), top.Digest)
		}
	}
	return wanted, nil
}

// checkSinglePlatform accepts platforms for a single-manifest image only if
// they are exactly its own: it has nothing to narrow.
func checkSinglePlatform(layoutDir string, top v1.Descriptor, wanted []string) error {
	if wanted == nil {
		return nil
	}
	p, err := platformOf(layoutDir, top)
	if err != nil {
		return err
	}
	if have := formatPlatform(p); len(wanted) != 1 || wanted[0] != have {
		return fmt.Errorf("failed to bundle %s for platforms %s: the layout holds only %s, a single-platform image %s", layoutDir, strings.Join(wanted, ", "), have, top.Digest)
	}
	return nil
}

// indexPlatforms lists the platforms of an index's image manifests, sorted,
// each once.
func indexPlatforms(layoutDir string, d v1.Descriptor) ([]string, error) {
	im, err := readIndexBlob(layoutDir, d)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range im.Manifests {
		if c.Platform != nil && c.MediaType.IsImage() {
			out = append(out, formatPlatform(c.Platform))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// readIndexBlob reads and parses an index blob, checking its digest.
func readIndexBlob(layoutDir string, d v1.Descriptor) (*v1.IndexManifest, error) {
	data, err := readBlob(layoutDir, d)
	if err != nil {
		return nil, err
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("failed to parse index %s of layout %s: %w", d.Digest, layoutDir, err)
	}
	return im, nil
}

// collectTop records the image's blobs: everything it references, or for
// an index narrowed to keep, the index and the kept platforms' manifests
// and what they reference. Each kept platform must have a manifest.
func collectTop(layoutDir string, top v1.Descriptor, keep []string, out map[string]blob) error {
	if keep == nil {
		return collect(layoutDir, top, out)
	}
	if top.Digest.Algorithm != "sha256" {
		return fmt.Errorf("failed to bundle %s: blob %s uses an unsupported digest algorithm", layoutDir, top.Digest)
	}
	im, err := readIndexBlob(layoutDir, top)
	if err != nil {
		return err
	}
	out[blobPath(top)] = blob{desc: top, json: true}
	found := map[string]bool{}
	for _, c := range im.Manifests {
		if c.Platform == nil || !c.MediaType.IsImage() || !slices.Contains(keep, formatPlatform(c.Platform)) {
			continue
		}
		found[formatPlatform(c.Platform)] = true
		if err := collect(layoutDir, c, out); err != nil {
			return err
		}
	}
	for _, k := range keep {
		if !found[k] {
			return fmt.Errorf("failed to bundle %s: index %s has no manifest for %s, which index.json's %s lists", layoutDir, top.Digest, k, bundleformat.AnnotationPlatforms)
		}
	}
	return nil
}
