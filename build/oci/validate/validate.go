// Package validate checks OCI image layouts against the image-layout spec
// (oci-layout, index.json, content-addressed blobs) and preseed bundles
// against docs/bundle-format.md. It is used by tests and by the fetcher to
// verify what it wrote; it must never modify what it checks.
package validate

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// Media types a layout may use: OCI's and, in pulled images, Docker's.
const (
	ociIndex       = bundleformat.MediaTypeOCIIndex
	ociManifest    = bundleformat.MediaTypeOCIManifest
	ociConfig      = bundleformat.MediaTypeOCIConfig
	dockerList     = bundleformat.MediaTypeDockerList
	dockerManifest = bundleformat.MediaTypeDockerManifest
	dockerConfig   = bundleformat.MediaTypeDockerConfig
)

// Descriptor is an OCI content descriptor, decoded strictly here rather
// than with go-containerregistry's types so that a malformed digest, a
// missing field or an unknown one is reported instead of defaulted or
// dropped. It declares every field the image-spec allows.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Data         []byte            `json:"data,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
}

// Platform is a descriptor's platform, with every field the image-spec
// allows (features is reserved there, and go-containerregistry writes it).
type Platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
	Features     []string `json:"features,omitempty"`
}

// index is an image index (or Docker manifest list), as the spec allows it.
type index struct {
	SchemaVersion *int              `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Manifests     []Descriptor      `json:"manifests"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// manifest is an image manifest, as the spec allows it.
type manifest struct {
	SchemaVersion *int              `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *Descriptor       `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Result lists what a valid layout holds.
type Result struct {
	// Index is index.json.
	Index []Descriptor
	// Blobs maps every reachable blob's digest to its media type.
	Blobs map[string]string
	// Manifests are the digests of every image manifest reached.
	Manifests []string
}

// digestOK accepts the only digests used here: sha256 in lower-case hex.
func digestOK(d string) bool {
	hexPart, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexPart) != 64 {
		return false
	}
	return strings.Trim(hexPart, "0123456789abcdef") == ""
}

// Layout checks the OCI image layout at dir: oci-layout's version, the
// index.json schema and media types, and that every blob reachable from
// index.json is present with the digest and size its descriptor names. Of
// an index narrowed by bundleformat.AnnotationPlatforms, only the listed
// platforms' manifests are reachable; the layers a slim bundle lists in
// bundleformat.AnnotationCachedLayers may be absent, and only those.
func Layout(dir string) (*Result, error) {
	data, err := os.ReadFile(filepath.Join(dir, bundleformat.LayoutEntry))
	if err != nil {
		return nil, fmt.Errorf("layout %s: failed to read oci-layout: %w", dir, err)
	}
	var ol struct {
		ImageLayoutVersion string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(data, &ol); err != nil {
		return nil, fmt.Errorf("layout %s: oci-layout is not JSON: %w", dir, err)
	}
	if ol.ImageLayoutVersion != "1.0.0" {
		return nil, fmt.Errorf("layout %s: oci-layout has imageLayoutVersion %q, want \"1.0.0\"", dir, ol.ImageLayoutVersion)
	}
	data, err = os.ReadFile(filepath.Join(dir, bundleformat.IndexEntry))
	if err != nil {
		return nil, fmt.Errorf("layout %s: failed to read index.json: %w", dir, err)
	}
	v := &validator{dir: dir, res: &Result{Blobs: map[string]string{}}}
	idx, err := v.parseIndex(bundleformat.IndexEntry, data)
	if err != nil {
		return nil, err
	}
	if len(idx.Manifests) == 0 {
		return nil, fmt.Errorf("layout %s: index.json names no manifests", dir)
	}
	v.res.Index = idx.Manifests
	for i, d := range idx.Manifests {
		if err := v.walkTop(i, d); err != nil {
			return nil, err
		}
	}
	return v.res, nil
}

// walkTop walks an image of index.json, with the layers it lists in
// bundleformat.AnnotationCachedLayers (a slim bundle's) allowed absent:
// each must be a layer of the image.
func (v *validator) walkTop(i int, d Descriptor) error {
	v.cached = map[string]bool{}
	if a, ok := d.Annotations[bundleformat.AnnotationCachedLayers]; ok {
		ds, err := bundleformat.ParseCachedLayers(a)
		if err != nil {
			return fmt.Errorf("layout %s: index.json manifests[%d]: %w", v.dir, i, err)
		}
		for _, c := range ds {
			v.cached[c.String()] = false
		}
	}
	if err := v.walkPlatforms(i, d); err != nil {
		return err
	}
	for c, seen := range v.cached {
		if !seen {
			return fmt.Errorf("layout %s: index.json manifests[%d] lists %s in %s, which is no layer of the image", v.dir, i, c, bundleformat.AnnotationCachedLayers)
		}
	}
	return nil
}

// walkPlatforms walks an image of index.json. An index narrowed to some
// platforms (bundleformat.AnnotationPlatforms) is followed only into their
// manifests: each must be there, the others may be absent.
func (v *validator) walkPlatforms(i int, d Descriptor) error {
	annotation, narrowed := d.Annotations[bundleformat.AnnotationPlatforms]
	if !narrowed {
		return v.walk(d)
	}
	if d.MediaType != ociIndex && d.MediaType != dockerList {
		return fmt.Errorf("layout %s: index.json manifests[%d] (%s, %s) carries %s, which only an image index may", v.dir, i, d.Digest, d.MediaType, bundleformat.AnnotationPlatforms)
	}
	ps, err := bundleformat.ParsePlatforms(annotation)
	if err != nil {
		return fmt.Errorf("layout %s: index.json manifests[%d]: %w", v.dir, i, err)
	}
	idx, err := v.index(d)
	if err != nil {
		return err
	}
	for _, p := range ps {
		want, found := bundleformat.FormatPlatform(p), false
		for _, c := range idx.Manifests {
			if c.Platform == nil || (c.MediaType != ociManifest && c.MediaType != dockerManifest) || c.Platform.format() != want {
				continue
			}
			found = true
			if err := v.walk(c); err != nil {
				return err
			}
		}
		if !found {
			return fmt.Errorf("layout %s: index %s has no manifest for %s, which index.json's %s lists", v.dir, d.Digest, want, bundleformat.AnnotationPlatforms)
		}
	}
	return nil
}

// format spells a platform as bundleformat.FormatPlatform does.
func (p *Platform) format() string {
	return bundleformat.FormatPlatform(ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant})
}

type validator struct {
	dir string
	res *Result
	// cached are the layers of the image being walked that a slim bundle
	// leaves out, each true once seen in a manifest.
	cached map[string]bool
}

func (v *validator) parseIndex(what string, data []byte) (*index, error) {
	var idx index
	if err := bundleformat.DecodeStrict(data, &idx); err != nil {
		return nil, fmt.Errorf("layout %s: %s is not a valid image index: %w", v.dir, what, err)
	}
	if idx.SchemaVersion == nil || *idx.SchemaVersion != 2 {
		return nil, fmt.Errorf("layout %s: %s must have schemaVersion 2", v.dir, what)
	}
	if idx.MediaType != "" && idx.MediaType != ociIndex && idx.MediaType != dockerList {
		return nil, fmt.Errorf("layout %s: %s has mediaType %q, not an image index", v.dir, what, idx.MediaType)
	}
	if idx.Manifests == nil {
		return nil, fmt.Errorf("layout %s: %s has no manifests array", v.dir, what)
	}
	for i, d := range idx.Manifests {
		if err := v.checkDescriptor(fmt.Sprintf("%s manifests[%d]", what, i), d); err != nil {
			return nil, err
		}
		switch d.MediaType {
		case ociIndex, ociManifest, dockerList, dockerManifest:
		default:
			return nil, fmt.Errorf("layout %s: %s manifests[%d] has mediaType %q, neither an index nor a manifest", v.dir, what, i, d.MediaType)
		}
		if d.Platform != nil && (d.Platform.OS == "" || d.Platform.Architecture == "") {
			return nil, fmt.Errorf("layout %s: %s manifests[%d] has a platform without os or architecture", v.dir, what, i)
		}
	}
	return &idx, nil
}

func (v *validator) checkDescriptor(what string, d Descriptor) error {
	if d.MediaType == "" {
		return fmt.Errorf("layout %s: %s has no mediaType", v.dir, what)
	}
	if !digestOK(d.Digest) {
		return fmt.Errorf("layout %s: %s has an invalid digest %q (want sha256:<64 lower-case hex>)", v.dir, what, d.Digest)
	}
	if d.Size < 0 {
		return fmt.Errorf("layout %s: %s has a negative size", v.dir, what)
	}
	return nil
}

// blob reads a blob (fully, if keep) and checks its digest and size.
func (v *validator) blob(d Descriptor, keep bool) ([]byte, error) {
	p := filepath.Join(v.dir, "blobs", "sha256", d.Digest[len("sha256:"):])
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("layout %s: blob %s (%s) is missing: %w", v.dir, d.Digest, d.MediaType, err)
	}
	defer f.Close()
	h := sha256.New()
	var buf bytes.Buffer
	w := io.Writer(h)
	if keep {
		w = io.MultiWriter(h, &buf)
	}
	n, err := io.Copy(w, f)
	if err != nil {
		return nil, fmt.Errorf("layout %s: failed to read blob %s: %w", v.dir, d.Digest, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.Digest {
		return nil, fmt.Errorf("layout %s: blob %s has content digest %s", v.dir, d.Digest, got)
	}
	if n != d.Size {
		return nil, fmt.Errorf("layout %s: blob %s has size %d, its descriptor says %d", v.dir, d.Digest, n, d.Size)
	}
	v.res.Blobs[d.Digest] = d.MediaType
	return buf.Bytes(), nil
}

func (v *validator) walk(d Descriptor) error {
	switch d.MediaType {
	case ociIndex, dockerList:
		idx, err := v.index(d)
		if err != nil {
			return err
		}
		for _, c := range idx.Manifests {
			if err := v.walk(c); err != nil {
				return err
			}
		}
		return nil
	case ociManifest, dockerManifest:
		data, err := v.blob(d, true)
		if err != nil {
			return err
		}
		return v.manifest(d, data)
	}
	return fmt.Errorf("layout %s: descriptor %s has mediaType %q, neither an index nor a manifest", v.dir, d.Digest, d.MediaType)
}

// index reads and checks the index blob d.
func (v *validator) index(d Descriptor) (*index, error) {
	data, err := v.blob(d, true)
	if err != nil {
		return nil, err
	}
	idx, err := v.parseIndex("index "+d.Digest, data)
	if err != nil {
		return nil, err
	}
	if idx.MediaType != "" && idx.MediaType != d.MediaType {
		return nil, fmt.Errorf("layout %s: index %s has mediaType %q, its descriptor says %q", v.dir, d.Digest, idx.MediaType, d.MediaType)
	}
	return idx, nil
}

func (v *validator) manifest(d Descriptor, data []byte) error {
	var m manifest
	if err := bundleformat.DecodeStrict(data, &m); err != nil {
		return fmt.Errorf("layout %s: manifest %s is not valid JSON: %w", v.dir, d.Digest, err)
	}
	if m.SchemaVersion == nil || *m.SchemaVersion != 2 {
		return fmt.Errorf("layout %s: manifest %s must have schemaVersion 2", v.dir, d.Digest)
	}
	if m.MediaType != "" && m.MediaType != d.MediaType {
		return fmt.Errorf("layout %s: manifest %s has mediaType %q, its descriptor says %q", v.dir, d.Digest, m.MediaType, d.MediaType)
	}
	if m.Config == nil {
		return fmt.Errorf("layout %s: manifest %s has no config", v.dir, d.Digest)
	}
	if err := v.checkDescriptor("config of manifest "+d.Digest, *m.Config); err != nil {
		return err
	}
	if m.Config.MediaType != ociConfig && m.Config.MediaType != dockerConfig {
		return fmt.Errorf("layout %s: manifest %s has config mediaType %q", v.dir, d.Digest, m.Config.MediaType)
	}
	cdata, err := v.blob(*m.Config, true)
	if err != nil {
		return err
	}
	var cfg struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		RootFS       struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(cdata, &cfg); err != nil {
		return fmt.Errorf("layout %s: config %s is not valid JSON: %w", v.dir, m.Config.Digest, err)
	}
	if cfg.OS == "" || cfg.Architecture == "" || cfg.RootFS.Type != "layers" {
		return fmt.Errorf("layout %s: config %s lacks os, architecture or rootfs.type \"layers\"", v.dir, m.Config.Digest)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return fmt.Errorf("layout %s: config %s has %d diff_ids for %d layers", v.dir, m.Config.Digest, len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	if d.Platform != nil && (d.Platform.OS != cfg.OS || d.Platform.Architecture != cfg.Architecture) {
		return fmt.Errorf("layout %s: manifest %s is described as %s/%s, its config says %s/%s", v.dir, d.Digest, d.Platform.OS, d.Platform.Architecture, cfg.OS, cfg.Architecture)
	}
	for i, l := range m.Layers {
		if err := v.checkDescriptor(fmt.Sprintf("layers[%d] of manifest %s", i, d.Digest), l); err != nil {
			return err
		}
		if _, ok := v.cached[l.Digest]; ok {
			v.cached[l.Digest] = true
			continue
		}
		if _, err := v.blob(l, false); err != nil {
			return err
		}
	}
	v.res.Manifests = append(v.res.Manifests, d.Digest)
	return nil
}
