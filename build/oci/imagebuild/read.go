package imagebuild

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// maxJSONBlob bounds an index, manifest or config read into memory.
const maxJSONBlob = 16 << 20

// layoutDir reads an OCI image layout whose files may be symlinks.
//
// Bazel stages the files of a tree-artifact input (an oci_image, a pulled
// image) in the sandbox as symlinks to its output tree, and
// go-containerregistry's layout package refuses a blob that is a symlink, so
// that a crafted layout cannot pass off another file as a blob. Here a blob
// may be a symlink, but what it resolves to must be a regular file, and every
// blob is checked against the digest and size of the descriptor that names
// it as it is read (a reader of a layer fails at its end on a mismatch), so a
// link cannot bring in other content either.
type layoutDir string

func (l layoutDir) blobPath(h v1.Hash) string {
	return filepath.Join(string(l), "blobs", h.Algorithm, h.Hex)
}

// open returns a reader of the blob d names that fails on a size or digest
// other than d's.
func (l layoutDir) open(d v1.Descriptor) (io.ReadCloser, error) {
	if d.Digest.Algorithm != "sha256" || len(d.Digest.Hex) != 64 || strings.Trim(d.Digest.Hex, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("OCI layout %s: descriptor names digest %q, want sha256:<64 lower-case hex>", l, d.Digest)
	}
	p := l.blobPath(d.Digest)
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: blob %s (%s) is missing: %w", l, d.Digest, d.MediaType, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("OCI layout %s: failed to stat blob %s: %w", l, d.Digest, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("OCI layout %s: blob %s is not a regular file (%s)", l, d.Digest, st.Mode().Type())
	}
	return &verifier{f: f, desc: d, dir: l, h: sha256.New()}, nil
}

// readJSON reads a small blob whole, checked against d.
func (l layoutDir) readJSON(d v1.Descriptor) ([]byte, error) {
	if d.Size > maxJSONBlob {
		return nil, fmt.Errorf("OCI layout %s: blob %s (%s) has size %d, more than %d", l, d.Digest, d.MediaType, d.Size, maxJSONBlob)
	}
	rc, err := l.open(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// verifier reads a blob, hashing it, and fails at its end (or as soon as it
// is longer than its descriptor says) unless it matches the descriptor.
type verifier struct {
	f    *os.File
	desc v1.Descriptor
	dir  layoutDir
	h    hash.Hash
	n    int64
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.f.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.n > v.desc.Size {
		return n, fmt.Errorf("OCI layout %s: blob %s is larger than its descriptor's size %d", v.dir, v.desc.Digest, v.desc.Size)
	}
	if errors.Is(err, io.EOF) {
		if v.n != v.desc.Size {
			return n, fmt.Errorf("OCI layout %s: blob %s has size %d, its descriptor says %d", v.dir, v.desc.Digest, v.n, v.desc.Size)
		}
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.desc.Digest.Hex {
			return n, fmt.Errorf("OCI layout %s: blob %s has content digest sha256:%s", v.dir, v.desc.Digest, got)
		}
	}
	return n, err
}

func (v *verifier) Close() error { return v.f.Close() }

// index reads index.json: not a blob, so it has no digest to check.
func (l layoutDir) index() (*v1.IndexManifest, error) {
	data, err := os.ReadFile(filepath.Join(string(l), bundleformat.IndexEntry))
	if err != nil {
		return nil, fmt.Errorf("failed to read OCI layout %s: %w", l, err)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("failed to parse index.json of OCI layout %s: %w", l, err)
	}
	return im, nil
}

// image reads the manifest d names and its config, both checked, and returns
// the image; its layers are checked as they are read.
func (l layoutDir) image(d v1.Descriptor) (v1.Image, error) {
	raw, err := l.readJSON(d)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: manifest %s is not valid: %w", l, d.Digest, err)
	}
	cfg, err := l.readJSON(m.Config)
	if err != nil {
		return nil, err
	}
	return partial.CompressedToImage(&layoutImage{dir: l, desc: d, raw: raw, manifest: m, config: cfg})
}

// layoutImage is the minimal core of a v1.Image that partial completes.
type layoutImage struct {
	dir      layoutDir
	desc     v1.Descriptor
	raw      []byte
	manifest *v1.Manifest
	config   []byte
}

func (i *layoutImage) RawManifest() ([]byte, error)   { return i.raw, nil }
func (i *layoutImage) RawConfigFile() ([]byte, error) { return i.config, nil }

func (i *layoutImage) MediaType() (types.MediaType, error) {
	if i.manifest.MediaType != "" {
		return i.manifest.MediaType, nil
	}
	return i.desc.MediaType, nil
}

func (i *layoutImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.manifest.Config.Digest {
		return &layoutLayer{dir: i.dir, desc: i.manifest.Config}, nil
	}
	for _, d := range i.manifest.Layers {
		if d.Digest == h {
			return &layoutLayer{dir: i.dir, desc: d}, nil
		}
	}
	return nil, fmt.Errorf("OCI layout %s: manifest %s has no layer %s", i.dir, i.desc.Digest, h)
}

// layoutLayer is one layer blob, read through a verifier.
type layoutLayer struct {
	dir  layoutDir
	desc v1.Descriptor
}

func (l *layoutLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *layoutLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *layoutLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *layoutLayer) Compressed() (io.ReadCloser, error)  { return l.dir.open(l.desc) }

// LoadImage reads the image of an OCI layout directory (see layoutDir for
// why symlinked blobs are followed). The layout must name one image, either
// directly or through an index; from an index the manifest for
// goos/goarch(/variant) is taken, which must then be held, or, with no
// platform given, the only one the index holds.
func LoadImage(dir, goos, goarch, variant string) (v1.Image, error) {
	return LoadImageFor(dir, ocispec.Platform{OS: goos, Architecture: goarch, Variant: variant}, ocispec.Platform{})
}

// LoadImageFor is LoadImage with target, the platform of the build's
// target (Bazel's target platform, as rules_oci takes it): with no want
// given and several platforms held, target's manifest is taken.
func LoadImageFor(dir string, want, target ocispec.Platform) (v1.Image, error) {
	l := layoutDir(dir)
	im, err := l.index()
	if err != nil {
		return nil, err
	}
	if len(im.Manifests) == 1 && im.Manifests[0].MediaType.IsImage() {
		return l.image(im.Manifests[0])
	}
	return l.pick(im, "index.json", nil, want, target)
}

// pick finds the image for the platform want in an index, else (want not
// given) its only platform, else target's. held, when not nil, are the
// platforms whose manifests a narrowed index holds (AnnotationPlatforms):
// the others' manifests are absent. An error names every platform held.
func (l layoutDir) pick(im *v1.IndexManifest, what string, held []string, want, target ocispec.Platform) (v1.Image, error) {
	var found []string
	var descs []v1.Descriptor
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsIndex():
			raw, err := l.readJSON(d)
			if err != nil {
				return nil, err
			}
			child, err := v1.ParseIndexManifest(bytes.NewReader(raw))
			if err != nil {
				return nil, fmt.Errorf("OCI layout %s: index %s is not valid: %w", l, d.Digest, err)
			}
			var childHeld []string
			if v, ok := d.Annotations[bundleformat.AnnotationPlatforms]; ok {
				childHeld = strings.Split(v, ",")
			}
			return l.pick(child, "index "+d.Digest.String(), childHeld, want, target)
		case d.MediaType.IsImage() && d.Platform != nil:
			p := bundleformat.FormatPlatform(ocispec.Platform{OS: d.Platform.OS, Architecture: d.Platform.Architecture, Variant: d.Platform.Variant})
			if held != nil && !slices.Contains(held, p) {
				continue
			}
			found = append(found, p)
			descs = append(descs, d)
		}
	}
	holds := strings.Join(found, ", ")
	matching := func(w ocispec.Platform) (v1.Descriptor, bool) {
		for _, d := range descs {
			if d.Platform.OS == w.OS && d.Platform.Architecture == w.Architecture && (w.Variant == "" || d.Platform.Variant == w.Variant) {
				return d, true
			}
		}
		return v1.Descriptor{}, false
	}
	switch {
	case len(descs) == 0:
		return nil, fmt.Errorf("failed to pick an image from OCI layout %s: its %s holds no image manifest with a platform", l, what)
	case want.OS != "" && want.Architecture != "":
		if d, ok := matching(want); ok {
			return l.image(d)
		}
		return nil, fmt.Errorf("failed to pick an image from OCI layout %s: its %s holds no manifest for %s (it holds %s)", l, what, bundleformat.FormatPlatform(want), holds)
	case len(descs) == 1:
		return l.image(descs[0])
	case target.OS != "" && target.Architecture != "":
		if d, ok := matching(target); ok {
			return l.image(d)
		}
		return nil, fmt.Errorf("failed to pick an image from OCI layout %s: its %s holds platforms %s, none of them the target platform %s; set os and architecture", l, what, holds, bundleformat.FormatPlatform(target))
	}
	return nil, fmt.Errorf("failed to pick an image from OCI layout %s: its %s holds platforms %s; set os and architecture", l, what, holds)
}

// configPlatform is the platform a config names, as an index describes it.
func configPlatform(raw []byte) (*v1.Platform, error) {
	var cf struct {
		OS           string   `json:"os"`
		Architecture string   `json:"architecture"`
		Variant      string   `json:"variant,omitempty"`
		OSVersion    string   `json:"os.version,omitempty"`
		OSFeatures   []string `json:"os.features,omitempty"`
	}
	if err := json.Unmarshal(raw, &cf); err != nil {
		return nil, err
	}
	if cf.OS == "" || cf.Architecture == "" {
		return nil, fmt.Errorf("config lacks os or architecture")
	}
	return &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant, OSVersion: cf.OSVersion, OSFeatures: cf.OSFeatures}, nil
}
