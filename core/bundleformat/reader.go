package bundleformat

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Memory bounds of the metadata reader.
const (
	// MaxJSONBlob bounds index.json, manifests and configs held in memory.
	MaxJSONBlob = 4 << 20
	// maxSpareBlob and maxSpareTotal bound blobs kept while their referrer
	// has not been read yet (JSON blobs are sorted by path, not by
	// reference order).
	maxSpareBlob  = 1 << 20
	maxSpareTotal = 16 << 20
	// maxLayoutEntry bounds the oci-layout entry.
	maxLayoutEntry = 4096
)

// Platforms chooses among the manifests of an image index. containerd's
// platforms.MatchComparer is one.
type Platforms interface {
	// Match tells whether a platform is wanted.
	Match(ocispec.Platform) bool
	// Less tells whether a is preferred to b (both matching).
	Less(a, b ocispec.Platform) bool
}

// Policy is what a caller decides for the metadata reader.
type Policy struct {
	// Platform picks, in each index, the best matching manifest, and
	// refuses an image for another platform. Nil follows every manifest
	// (the build's view: a bundle holds all of them).
	Platform Platforms
	// CheckName vets each image name of index.json (e.g. that it is a
	// full, normalised reference: a bare tag would become an image
	// literally named like the tag). Nil accepts any non-empty name.
	CheckName func(name string) error
}

// Image is one image a bundle names.
type Image struct {
	Name string
	// Target is the index.json descriptor the image record points to.
	Target ocispec.Descriptor
	// Platforms are, for an index narrowed by AnnotationPlatforms, the
	// platforms the bundle holds (FormatPlatform spelling); nil when it
	// holds every manifest.
	Platforms []string
	// CachedLayers are the layers the bundle leaves out because the
	// appliance's EROFS layer content cache holds them
	// (AnnotationCachedLayers); nil when it holds every layer.
	CachedLayers []digest.Digest
	// Manifests are the image manifests followed from Target: with a
	// Policy.Platform the one that is unpacked, else every one reachable,
	// in index order without repeats.
	Manifests []ImageManifest
}

// ImageManifest is a manifest followed and the snapshot it unpacks to.
type ImageManifest struct {
	Descriptor ocispec.Descriptor
	// ChainID names the snapshot of the manifest's layers.
	ChainID digest.Digest
}

// Metadata is what a bundle holds before its layers: enough to know every
// digest and to decide whether it must be imported.
type Metadata struct {
	Images []Image
	// Index is the raw index.json.
	Index []byte
	// JSON holds the index, manifest and config blobs the images need,
	// checked against their digests and sizes.
	JSON map[digest.Digest][]byte
	// Layers are the layer blobs the followed manifests need (not read).
	Layers map[digest.Digest]ocispec.Descriptor
	// Cached are the layers of Layers the bundle does not hold: its images'
	// AnnotationCachedLayers. Every other layer must be in the bundle.
	Cached map[digest.Digest]bool
	// Owner names, for each needed blob, what needs it (for errors).
	Owner map[digest.Digest]string
}

// role is what a pending JSON blob is.
type role struct {
	desc  ocispec.Descriptor
	owner string
	// held narrows an index target to these platforms (AnnotationPlatforms).
	held []string
}

// reader is the state of one ReadMetadata.
type reader struct {
	tr         *tar.Reader
	policy     Policy
	m          *Metadata
	pending    map[digest.Digest]role
	spare      map[digest.Digest][]byte
	spareTotal int64
}

// ReadMetadata reads a decompressed bundle up to the last JSON blob its
// images need and stops there, before the layers (the format puts them
// last). Every entry it reads must follow CheckEntry. When every JSON blob
// was read but an image's manifests or config do not fit, it returns the
// metadata with the error, so a caller can still name the images.
func ReadMetadata(ctx context.Context, tr *tar.Reader, p Policy) (*Metadata, error) {
	r := &reader{
		tr:      tr,
		policy:  p,
		m:       &Metadata{JSON: map[digest.Digest][]byte{}, Layers: map[digest.Digest]ocispec.Descriptor{}, Cached: map[digest.Digest]bool{}, Owner: map[digest.Digest]string{}},
		pending: map[digest.Digest]role{},
		spare:   map[digest.Digest][]byte{},
	}
	if err := r.readLayout(); err != nil {
		return nil, err
	}
	idx, err := r.readIndex()
	if err != nil {
		return nil, err
	}
	if err := r.addImages(idx); err != nil {
		return nil, err
	}
	if err := r.readBlobs(ctx); err != nil {
		return nil, err
	}
	return r.m, r.finish()
}

// readLayout reads the first entry, which must be oci-layout.
func (r *reader) readLayout() error {
	hdr, err := Next(r.tr)
	if err == io.EOF {
		return errors.New("empty bundle: no tar entries")
	}
	if err != nil {
		return err
	}
	if hdr.Name != LayoutEntry {
		return fmt.Errorf("first entry is %q, want %s", hdr.Name, LayoutEntry)
	}
	b, err := ReadSmall(r.tr, hdr, maxLayoutEntry)
	if err != nil {
		return err
	}
	var layout ocispec.ImageLayout
	if err := json.Unmarshal(b, &layout); err != nil || layout.Version != ocispec.ImageLayoutVersion {
		return fmt.Errorf("%s is %q, want imageLayoutVersion %s", LayoutEntry, b, ocispec.ImageLayoutVersion)
	}
	return nil
}

// readIndex reads the second entry, which must be index.json.
func (r *reader) readIndex() (*ocispec.Index, error) {
	hdr, err := Next(r.tr)
	if err == io.EOF {
		return nil, errors.New("missing index.json: the bundle ends after oci-layout")
	}
	if err != nil {
		return nil, err
	}
	if hdr.Name != IndexEntry {
		return nil, fmt.Errorf("missing index.json: second entry is %q", hdr.Name)
	}
	if r.m.Index, err = ReadSmall(r.tr, hdr, MaxJSONBlob); err != nil {
		return nil, err
	}
	var index ocispec.Index
	if err := json.Unmarshal(r.m.Index, &index); err != nil {
		return nil, fmt.Errorf("index.json is not an OCI index: %w", err)
	}
	if len(index.Manifests) == 0 {
		return nil, errors.New("index.json names no images")
	}
	return &index, nil
}

// ImageName is the name an index.json descriptor gives its image.
func ImageName(d ocispec.Descriptor) string {
	if name := d.Annotations[AnnotationImageName]; name != "" {
		return name
	}
	return d.Annotations[AnnotationRefName]
}

// addImages records index.json's images and makes their targets pending.
func (r *reader) addImages(idx *ocispec.Index) error {
	seen := make(map[string]bool)
	for i, d := range idx.Manifests {
		name := ImageName(d)
		if name == "" {
			return fmt.Errorf("index.json entry %d (%s) has no image name: want annotation %s", i, d.Digest, AnnotationImageName)
		}
		if r.policy.CheckName != nil {
			if err := r.policy.CheckName(name); err != nil {
				return fmt.Errorf("index.json entry %d: image name %q is not a full reference: %w", i, name, err)
			}
		}
		if seen[name] {
			return fmt.Errorf("index.json names image %q twice", name)
		}
		seen[name] = true
		if err := d.Digest.Validate(); err != nil {
			return fmt.Errorf("index.json entry %d (%s): %w", i, name, err)
		}
		held, err := heldPlatforms(d)
		if err != nil {
			return fmt.Errorf("index.json entry %d (%s): %w", i, name, err)
		}
		cached, err := cachedOf(d.Annotations)
		if err != nil {
			return fmt.Errorf("index.json entry %d (%s): %w", i, name, err)
		}
		if p := r.policy.Platform; p != nil && d.Platform != nil && !p.Match(*d.Platform) {
			return fmt.Errorf("image %s is for %s, not this machine's platform", name, FormatPlatform(*d.Platform))
		}
		for _, c := range cached {
			r.m.Cached[c] = true
		}
		r.m.Images = append(r.m.Images, Image{Name: name, Target: d, Platforms: held, CachedLayers: cached})
		if other, ok := r.pending[d.Digest]; ok && (other.desc.Size != d.Size || other.desc.MediaType != d.MediaType || !slices.Equal(other.held, held)) {
			return fmt.Errorf("index.json entry %d (%s): %s is also %s with another size, media type or platforms", i, name, d.Digest, other.owner)
		} else if !ok {
			r.pending[d.Digest] = role{desc: d, owner: "image " + name, held: held}
		}
	}
	return nil
}

// heldPlatforms reads AnnotationPlatforms of an index.json descriptor: nil
// without it; only an image index may carry it.
func heldPlatforms(d ocispec.Descriptor) ([]string, error) {
	v, ok := d.Annotations[AnnotationPlatforms]
	if !ok {
		return nil, nil
	}
	if !IsIndex(d.MediaType) {
		return nil, fmt.Errorf("annotation %s on %s of media type %q: only an image index is narrowed to platforms", AnnotationPlatforms, d.Digest, d.MediaType)
	}
	ps, err := ParsePlatforms(v)
	if err != nil {
		return nil, err
	}
	held := make([]string, 0, len(ps))
	for _, p := range ps {
		held = append(held, FormatPlatform(p))
	}
	return held, nil
}

// FormatPlatform spells a platform as os/arch[/variant].
func FormatPlatform(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}
