package bundlefile

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// Image is one image a bundle names, with the one manifest of it that is
// unpacked.
type Image struct {
	Name string
	// Target is the index.json descriptor the image record points to.
	Target ocispec.Descriptor
	// Held are the platforms a narrowed index holds (see
	// bundleformat.AnnotationPlatforms); nil when it holds every one.
	Held []string
	// Manifest is the manifest of the platform that is unpacked.
	Manifest ocispec.Descriptor
	// ChainID names the snapshot the image unpacks to.
	ChainID digest.Digest
	// Records are the image records preseed keeps for the image, Name
	// first (see recordsOf); empty when the metadata did not say which
	// manifest is unpacked.
	Records []Record
}

// Record is one image record: a name and the descriptor it points to.
type Record struct {
	Name   string
	Target ocispec.Descriptor
}

// Names lists the image's record names, or only its name when they are
// unknown.
func (im Image) Names() []string {
	if len(im.Records) == 0 {
		return []string{im.Name}
	}
	out := make([]string, 0, len(im.Records))
	for _, n := range im.Records {
		out = append(out, n.Name)
	}
	return out
}

// recordsOf pairs the names bundleformat.References gives an image with
// what each record points to: repo@<unpacked manifest> of an index points
// to that manifest's descriptor (with its platform), so that the CRI
// resolves it without choosing a platform; the others point to the
// index.json target.
func recordsOf(im Image) ([]Record, error) {
	var manifests []digest.Digest
	if im.Manifest.Digest != im.Target.Digest {
		manifests = append(manifests, im.Manifest.Digest)
	}
	refs, err := bundleformat.References(im.Name, im.Target.Digest, manifests...)
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(refs))
	for _, r := range refs {
		n := Record{Name: r, Target: im.Target}
		if c, err := reference.ParseNamed(r); err == nil && r != im.Name {
			if d, ok := c.(reference.Digested); ok && len(manifests) > 0 && d.Digest() == im.Manifest.Digest {
				n.Target = im.Manifest
			}
		}
		out = append(out, n)
	}
	return out, nil
}

// Metadata is the format's metadata of a bundle (index.json, the JSON
// blobs, the layer descriptors and their owners) seen as preseed needs it.
type Metadata struct {
	*bundleformat.Metadata
	// Unpacked are the bundle's images, each with the one manifest
	// unpacked (bundleformat.Metadata.Images are the same images as the
	// format reads them).
	Unpacked []Image
}

// ReadMetadata reads a bundle up to the last JSON blob its images need and
// stops there, before the layers, with the format's reader: it follows
// platform and wants full image names. With an error, the metadata it
// returns (if any) still names the images.
func ReadMetadata(ctx context.Context, s *Stream, platform platforms.MatchComparer) (*Metadata, error) {
	policy := bundleformat.Policy{Platform: platform, CheckName: checkName}
	bm, err := bundleformat.ReadMetadata(ctx, s.Tar, policy)
	if bm == nil {
		return nil, err
	}
	m := &Metadata{Metadata: bm}
	for _, im := range bm.Images {
		ref := Image{Name: im.Name, Target: im.Target, Held: im.Platforms}
		// The platform policy follows exactly one manifest per image: the
		// best match among those the bundle holds.
		if len(im.Manifests) == 1 {
			ref.Manifest, ref.ChainID = im.Manifests[0].Descriptor, im.Manifests[0].ChainID
			records, rerr := recordsOf(ref)
			if rerr != nil && err == nil {
				err = fmt.Errorf("image %s: %w", im.Name, rerr)
			}
			ref.Records = records
		}
		m.Unpacked = append(m.Unpacked, ref)
	}
	return m, err
}

// checkName accepts only a full, normalised reference: a bare tag would
// become an image literally named like the tag.
func checkName(name string) error {
	_, err := reference.ParseNamed(name)
	return err
}

// ManifestDigests lists the image manifests of im known from the JSON
// blobs read (of a narrowed index, those of its held platforms). complete
// is false when a nested index was not read (the metadata pass follows only
// one platform), so only part is known.
func (m *Metadata) ManifestDigests(im Image) (known map[digest.Digest]bool, complete bool) {
	out := make(map[digest.Digest]bool)
	complete = true
	var walk func(d ocispec.Descriptor)
	walk = func(d ocispec.Descriptor) {
		switch {
		case images.IsManifestType(d.MediaType):
			out[d.Digest] = true
		case images.IsIndexType(d.MediaType):
			b, ok := m.JSON[d.Digest]
			if !ok {
				complete = false
				return
			}
			var idx ocispec.Index
			if err := json.Unmarshal(b, &idx); err != nil {
				complete = false
				return
			}
			for _, c := range idx.Manifests {
				// A narrowed index holds only some platforms' manifests.
				if d.Digest == im.Target.Digest && im.Held != nil && (c.Platform == nil || !slices.Contains(im.Held, bundleformat.FormatPlatform(*c.Platform))) {
					continue
				}
				walk(c)
			}
		}
	}
	walk(im.Target)
	out[im.Manifest.Digest] = true
	return out, complete
}

// LayersOf lists the layers of im's unpacked manifest with their diffIDs, in
// order. ReadMetadata checked both blobs already.
func (m *Metadata) LayersOf(im Image) ([]ocispec.Descriptor, []digest.Digest, error) {
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
