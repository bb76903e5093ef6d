package preseed

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"
)

// maxManifestFile bounds the preseed manifest read into memory: it holds a
// few hundred bytes per bundle.
const maxManifestFile = 16 << 20

// ManifestFile is the preseed manifest the build writes next to the bundles
// (//images:preseed_json, written by build/oci/bundle.WriteTree as its
// TreeManifest). This is a reader of the same JSON rather than that type
// because build/oci/bundle is build code (the bundle writer, on
// go-containerregistry): importing it would link it into the appliance's
// init. TestManifestFromImageRules reads the real file the build writes
// with this type, so the two cannot drift apart unnoticed.
type ManifestFile struct {
	// Bundles is required: a file without it is not a manifest.
	Bundles []ManifestEntry `json:"bundles"`
}

// ManifestEntry is one bundle of the manifest.
type ManifestEntry struct {
	Namespace string `json:"namespace"`
	// Name is the file name without its extension.
	Name string `json:"name"`
	// Path is the bundle's absolute path in the appliance.
	Path        string `json:"path"`
	Compression string `json:"compression"`
	Size        int64  `json:"size"`
	// SHA256 is the hex sha256 of the whole bundle file.
	SHA256 string `json:"sha256"`
	// Reference is the one image name the bundle's index.json carries.
	Reference string `json:"reference"`
	// IndexDigest is the digest of the bundle's index.json.
	IndexDigest digest.Digest `json:"index_digest"`
	// Target is index.json's descriptor: what the image record points to.
	Target ocispec.Descriptor `json:"target"`
	// Manifests are every image manifest reachable from Target.
	Manifests []ManifestImage `json:"manifests"`
}

// ManifestImage is one image manifest of a bundle.
type ManifestImage struct {
	Digest   digest.Digest     `json:"digest"`
	Platform *ocispec.Platform `json:"platform,omitempty"`
}

// manifest is a loaded, checked preseed manifest.
type manifest struct {
	// file is where it was read from, for errors.
	file    string
	byPath  map[string]*ManifestEntry
	byNSDir map[string]*ManifestEntry // namespace/file name
}

// loadManifest reads and checks the manifest at file. Every entry must be
// complete: a manifest that could not say what a bundle should be would
// let that bundle through unchecked.
func loadManifest(file string) (*manifest, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("failed to read the preseed manifest %s: %w", file, err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxManifestFile+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read the preseed manifest %s: %w", file, err)
	}
	if len(raw) > maxManifestFile {
		return nil, fmt.Errorf("the preseed manifest %s is larger than %d bytes", file, maxManifestFile)
	}
	var mf ManifestFile
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&mf); err != nil {
		return nil, fmt.Errorf("the preseed manifest %s is not valid JSON: %w", file, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("the preseed manifest %s has data after its JSON object", file)
	}
	if mf.Bundles == nil {
		return nil, fmt.Errorf("the preseed manifest %s has no \"bundles\" list", file)
	}
	m := &manifest{file: file, byPath: make(map[string]*ManifestEntry), byNSDir: make(map[string]*ManifestEntry)}
	for i := range mf.Bundles {
		e := &mf.Bundles[i]
		if err := e.validate(); err != nil {
			return nil, fmt.Errorf("the preseed manifest %s: bundle %d (%s): %w", file, i, e.Path, err)
		}
		k := e.Namespace + "/" + path.Base(e.Path)
		if m.byPath[e.Path] != nil || m.byNSDir[k] != nil {
			return nil, fmt.Errorf("the preseed manifest %s lists %s twice", file, k)
		}
		m.byPath[e.Path] = e
		m.byNSDir[k] = e
	}
	return m, nil
}

func (e *ManifestEntry) validate() error {
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
	return nil
}

// entry finds the manifest's entry for a bundle file: by its path (in the
// appliance, where the manifest's paths are real), else by namespace and
// file name (a tree placed under another root, as in tests).
func (m *manifest) entry(b *bundle) (*ManifestEntry, error) {
	e := m.byPath[b.path]
	if e == nil {
		e = m.byNSDir[b.namespace+"/"+b.file]
	}
	if e == nil {
		return nil, fmt.Errorf("bundle %s is not in the preseed manifest %s", b.path, m.file)
	}
	return e, nil
}

// check compares what the metadata pass learnt of a bundle (its size and
// the digests of index.json and the JSON blobs, no layer) with its entry.
// It reports every difference at once, so one error tells the whole story.
func (m *manifest) check(b *bundle, e *ManifestEntry, size int64) error {
	var diffs []string
	differs := func(what string, is, want any) {
		diffs = append(diffs, fmt.Sprintf("%s is %v, the manifest says %v", what, is, want))
	}
	if b.namespace != e.Namespace {
		differs("namespace", b.namespace, e.Namespace)
	}
	if size != e.Size {
		differs("size", size, e.Size)
	}
	if d := digest.FromBytes(b.meta.index); d != e.IndexDigest {
		differs("index.json digest", d, e.IndexDigest)
	}
	if len(b.meta.images) != 1 {
		var names []string
		for _, im := range b.meta.images {
			names = append(names, im.Name)
		}
		differs("images", strings.Join(names, ", "), e.Reference)
	} else {
		im := b.meta.images[0]
		if im.Name != e.Reference {
			differs("image name", im.Name, e.Reference)
		}
		if im.Target.Digest != e.Target.Digest || im.Target.Size != e.Target.Size || im.Target.MediaType != e.Target.MediaType {
			differs("target", descString(im.Target), descString(e.Target))
		}
		known, complete := b.meta.manifestDigests(im)
		want := make(map[digest.Digest]bool)
		for _, x := range e.Manifests {
			want[x.Digest] = true
		}
		var extra []string
		for d := range known {
			if !want[d] {
				extra = append(extra, d.String())
			}
		}
		if len(extra) > 0 || (complete && len(known) != len(want)) {
			sort.Strings(extra)
			var listed []string
			for d := range want {
				listed = append(listed, d.String())
			}
			sort.Strings(listed)
			var is []string
			for d := range known {
				is = append(is, d.String())
			}
			sort.Strings(is)
			differs("manifests", strings.Join(is, ", "), strings.Join(listed, ", "))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("bundle %s differs from the preseed manifest %s: %s", b.path, m.file, strings.Join(diffs, "; "))
	}
	return nil
}

func descString(d ocispec.Descriptor) string {
	return fmt.Sprintf("%s (%s, %d bytes)", d.Digest, d.MediaType, d.Size)
}

// manifestDigests lists the image manifests of im known from the JSON blobs
// read. complete is false when a nested index was not read (the metadata
// pass follows only this machine's platform), so only part is known.
func (m *metadata) manifestDigests(im imageRef) (map[digest.Digest]bool, bool) {
	out := make(map[digest.Digest]bool)
	complete := true
	var walk func(d ocispec.Descriptor)
	walk = func(d ocispec.Descriptor) {
		switch {
		case images.IsManifestType(d.MediaType):
			out[d.Digest] = true
		case images.IsIndexType(d.MediaType):
			b, ok := m.json[d.Digest]
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
				walk(c)
			}
		}
	}
	walk(im.Target)
	out[im.Manifest.Digest] = true
	return out, complete
}

// logAbsent logs the manifest's bundles that are not in the tree.
func (m *manifest) logAbsent(logger *zap.Logger, bundles []*bundle) {
	present := make(map[*ManifestEntry]bool)
	for _, b := range bundles {
		if e, err := m.entry(b); err == nil {
			present[e] = true
		}
	}
	var absent []string
	for p, e := range m.byPath {
		if !present[e] {
			absent = append(absent, p)
		}
	}
	sort.Strings(absent)
	for _, p := range absent {
		logger.Warn("bundle listed in the preseed manifest is absent", zap.String("manifest", m.file), zap.String("path", p))
	}
}
