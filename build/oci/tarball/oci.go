package tarball

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// Annotations naming an image in an OCI layout's index.json: the OCI one
// (often only the tag, as containerd's export writes it) and containerd's
// full name.
const (
	annotationRefName   = ocispec.AnnotationRefName
	annotationImageName = bundleformat.AnnotationImageName
)

// ociCopier copies one image of an OCI-layout archive into a layout. It is
// hand-written rather than go-containerregistry's layout package, which
// needs a directory and would refuse an index whose other platforms'
// manifests are absent (as `ctr export --platform` leaves it).
type ociCopier struct {
	a    *archive
	lp   layout.Path
	held []ocispec.Platform
	// absent counts an index's manifests the tarball does not hold.
	absent int
}

func loadOCI(a *archive, sel selector, lp layout.Path) (*Result, error) {
	if data, _, err := a.readSmall("oci-layout", maxJSON); err == nil {
		var ol struct {
			Version string `json:"imageLayoutVersion"`
		}
		if err := json.Unmarshal(data, &ol); err != nil || ol.Version != "1.0.0" {
			return nil, fmt.Errorf("oci-layout is not an image layout of version 1.0.0: %s", bytes.TrimSpace(data))
		}
	}
	data, _, err := a.readSmall("index.json", maxJSON)
	if err != nil {
		return nil, err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("index.json is not an image index: %w", err)
	}
	var cands []candidate
	var descs []v1.Descriptor
	for _, d := range idx.Manifests {
		if !d.MediaType.IsIndex() && !d.MediaType.IsImage() {
			continue // e.g. a referrer's artifact manifest
		}
		dg := digest.Digest(d.Digest.String())
		var names []string
		for _, k := range []string{annotationImageName, annotationRefName} {
			if n := d.Annotations[k]; n != "" && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		cands = append(cands, candidate{id: dg, digests: []digest.Digest{dg}, names: names})
		descs = append(descs, d)
	}
	i, err := choose(sel, cands, "a name from the list, or its digest")
	if err != nil {
		return nil, fmt.Errorf("index.json %w", err)
	}
	c := &ociCopier{a: a, lp: lp}
	return c.top(descs[i])
}

// top copies the chosen image and names it in the layout's index.json.
func (c *ociCopier) top(d v1.Descriptor) (*Result, error) {
	out := v1.Descriptor{MediaType: d.MediaType, Size: d.Size, Digest: d.Digest, Platform: d.Platform}
	res := &Result{Digest: digest.Digest(d.Digest.String()), MediaType: string(d.MediaType)}
	if d.MediaType.IsIndex() {
		if err := c.index(d); err != nil {
			return nil, err
		}
		if c.absent > 0 {
			v := bundleformat.JoinPlatforms(c.held)
			out.Annotations = map[string]string{bundleformat.AnnotationPlatforms: v}
			for _, p := range c.held {
				res.Platforms = append(res.Platforms, bundleformat.FormatPlatform(p))
			}
			slices.Sort(res.Platforms)
			res.Platforms = slices.Compact(res.Platforms)
		}
		out.Platform = nil
	} else {
		p, err := c.manifest(d)
		if err != nil {
			return nil, err
		}
		if out.Platform == nil {
			out.Platform = p
		}
	}
	if err := c.lp.AppendDescriptor(out); err != nil {
		return nil, fmt.Errorf("failed to write index.json of %s: %w", c.lp, err)
	}
	return res, nil
}

func blobName(d v1.Descriptor) string {
	return "blobs/" + d.Digest.Algorithm + "/" + d.Digest.Hex
}

// json copies a manifest's or index's blob and returns its bytes, kept as
// they are so the digest stays.
func (c *ociCopier) json(d v1.Descriptor, what string) ([]byte, error) {
	if err := digest.Digest(d.Digest.String()).Validate(); err != nil {
		return nil, fmt.Errorf("%s has an invalid digest: %w", what, err)
	}
	if err := writeBlob(c.a, c.lp, blobName(d), d, what); err != nil {
		return nil, err
	}
	data, _, err := c.a.readSmall(blobName(d), maxJSON)
	return data, err
}

func (c *ociCopier) index(d v1.Descriptor) error {
	data, err := c.json(d, "index")
	if err != nil {
		return err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("index %s is not an image index: %w", d.Digest, err)
	}
	held := 0
	for _, m := range idx.Manifests {
		if (m.MediaType.IsImage() || m.MediaType.IsIndex()) && !c.a.has(blobName(m)) {
			// Another platform's manifest, left out as containerd's
			// export with a platform filter leaves it.
			c.absent++
			continue
		}
		held++
		switch {
		case m.MediaType.IsIndex():
			err = c.index(m)
		case m.MediaType.IsImage():
			var p *v1.Platform
			if p, err = c.manifest(m); err == nil && m.Platform != nil {
				p = m.Platform
			}
			if p != nil {
				c.held = append(c.held, ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant})
			}
		default:
			err = writeBlob(c.a, c.lp, blobName(m), m, "blob of index "+d.Digest.String())
		}
		if err != nil {
			return err
		}
	}
	if held == 0 {
		return fmt.Errorf("holds none of the %d manifests of index %s", len(idx.Manifests), d.Digest)
	}
	return nil
}

// manifest copies an image manifest with its config and layers, and returns
// the config's platform.
func (c *ociCopier) manifest(d v1.Descriptor) (*v1.Platform, error) {
	data, err := c.json(d, "manifest")
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("manifest %s is not an image manifest: %w", d.Digest, err)
	}
	what := "config of manifest " + d.Digest.String()
	if err := writeBlob(c.a, c.lp, blobName(m.Config), m.Config, what); err != nil {
		return nil, err
	}
	for i, l := range m.Layers {
		if err := writeBlob(c.a, c.lp, blobName(l), l, fmt.Sprintf("layer %d of manifest %s", i, d.Digest)); err != nil {
			return nil, err
		}
	}
	if !m.Config.MediaType.IsConfig() {
		return nil, nil // an artifact, not a runnable image
	}
	cfg, _, err := c.a.readSmall(blobName(m.Config), maxJSON)
	if err != nil {
		return nil, err
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(cfg))
	if err != nil {
		return nil, fmt.Errorf("%s is not an image config: %w", what, err)
	}
	return cf.Platform(), nil
}
