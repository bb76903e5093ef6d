package bundleformat

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MaxManifestSize bounds a preseed manifest: it holds a few hundred bytes
// per bundle.
const MaxManifestSize = 16 << 20

// Manifest is the preseed manifest: every bundle of a preseed tree, written
// by build/oci/bundle.WriteTree (//images:preseed.json), carried in the
// appliance at ManifestPath and in the release's manifest.json.
type Manifest struct {
	// Bundles is required: a file without it is not a manifest.
	Bundles []Entry `json:"bundles"`
}

// Entry is one bundle of the manifest.
type Entry struct {
	Namespace string `json:"namespace"`
	// Name is the file name without its extension.
	Name string `json:"name"`
	// Path is the bundle's absolute path in the appliance.
	Path        string      `json:"path"`
	Compression Compression `json:"compression"`
	Size        int64       `json:"size"`
	// SHA256 is the hex sha256 of the whole bundle file.
	SHA256 string `json:"sha256"`
	// Reference is the one image name the bundle's index.json carries.
	Reference string `json:"reference"`
	// IndexDigest is the digest of the bundle's index.json.
	IndexDigest digest.Digest `json:"index_digest"`
	// Target is index.json's descriptor: what the image record points to.
	Target ocispec.Descriptor `json:"target"`
	// Manifests are every image manifest reachable from Target that the
	// bundle holds (for an index narrowed by AnnotationPlatforms, only
	// those of its platforms).
	Manifests []ManifestImage `json:"manifests"`
	// References are the names a pod may give the image: References of
	// Reference, Target and every manifest. Preseed registers Reference,
	// repo@Target and repo@ the manifest it unpacks.
	References []string `json:"references"`
	// CachedLayers are the layers the bundle does not hold (its index.json
	// lists them in AnnotationCachedLayers): the appliance carries them in
	// its EROFS layer content cache. In the order of the manifests' layers.
	CachedLayers []CachedLayer `json:"cached_layers,omitempty"`
}

// ManifestImage is one image manifest of a bundle.
type ManifestImage struct {
	Digest   digest.Digest     `json:"digest"`
	Platform *ocispec.Platform `json:"platform,omitempty"`
}

// ParseManifest decodes and checks a preseed manifest strictly: no unknown
// field, nothing after the object, every entry complete and consistent, no
// bundle listed twice. A manifest that could not say what a bundle should
// be would let that bundle through unchecked.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > MaxManifestSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxManifestSize)
	}
	var m Manifest
	if err := DecodeStrict(data, &m); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if m.Bundles == nil {
		return nil, errors.New(`no "bundles" list`)
	}
	seen := make(map[string]bool)
	for i := range m.Bundles {
		e := &m.Bundles[i]
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("bundle %d (%s): %w", i, e.Path, err)
		}
		k := e.Key()
		if seen[e.Path] || seen[k] {
			return nil, fmt.Errorf("lists %s twice", k)
		}
		seen[e.Path], seen[k] = true, true
	}
	return &m, nil
}

// Key names an entry by namespace and file name, which stay the same when a
// tree is placed under another root.
func (e *Entry) Key() string { return e.Namespace + "/" + path.Base(e.Path) }

// Validate checks that an entry is complete: every field a reader compares
// a bundle with is set and well-formed.
func (e *Entry) Validate() error {
	switch {
	case e.Namespace == "":
		return errors.New("no namespace")
	case !path.IsAbs(e.Path) || path.Clean(e.Path) != e.Path:
		return fmt.Errorf("path %q is not a clean absolute path", e.Path)
	case e.Size <= 0:
		return fmt.Errorf("size %d", e.Size)
	case e.Reference == "":
		return errors.New("no reference")
	case len(e.Manifests) == 0:
		return errors.New("no manifests")
	case len(e.References) == 0 || e.References[0] != e.Reference:
		return fmt.Errorf("references %q do not start with the reference %q", e.References, e.Reference)
	}
	if c, ok := FromFileName(e.Path); !ok || c != e.Compression {
		return fmt.Errorf("path %q does not end in %q, the extension of compression %q", e.Path, e.Compression.Ext(), e.Compression)
	}
	if b, err := hex.DecodeString(e.SHA256); err != nil || len(b) != 32 || strings.ToLower(e.SHA256) != e.SHA256 {
		return fmt.Errorf("sha256 %q is not 64 lowercase hex digits", e.SHA256)
	}
	if err := e.IndexDigest.Validate(); err != nil {
		return fmt.Errorf("index_digest: %w", err)
	}
	if err := e.Target.Digest.Validate(); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	for _, im := range e.Manifests {
		if err := im.Digest.Validate(); err != nil {
			return fmt.Errorf("manifests: %w", err)
		}
	}
	return validateCached(e.CachedLayers)
}

// Encode writes the manifest deterministically: bundles sorted by path,
// indented, ending in a newline. It does not change m.
func (m *Manifest) Encode() ([]byte, error) {
	out := Manifest{Bundles: append([]Entry{}, m.Bundles...)}
	sort.SliceStable(out.Bundles, func(i, j int) bool { return out.Bundles[i].Path < out.Bundles[j].Path })
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("failed to encode the preseed manifest: %w", err)
	}
	return append(data, '\n'), nil
}

// DecodeStrict decodes exactly one JSON value of data into v, refusing
// fields v does not declare and anything after the value.
func DecodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}
