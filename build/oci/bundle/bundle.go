// Package bundle writes preseed bundles (docs/bundle-format.md, declared in
// core/bundleformat): one image of an OCI image layout in a single
// deterministic tar, optionally compressed, named for containerd by its full
// reference, an index optionally narrowed to some platforms. It also lays
// out a set of bundles under /containerd/preseed/<namespace>/ with the
// preseed manifest, and inspects bundles for it.
// It must not talk to containerd or to a registry, nor declare any part of
// the format itself.
package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// NormalizeReference turns "hello:1.0" into "docker.io/library/hello:1.0", as
// containerd and the CRI name images. A reference without tag or digest is
// refused: a preseeded image must be named exactly as pods will ask for it.
func NormalizeReference(ref string) (string, error) {
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	if reference.IsNameOnly(n) {
		return "", fmt.Errorf("image reference %q has neither tag nor digest: name the image as pods will (e.g. %s:1.0)", ref, n.Name())
	}
	return n.String(), nil
}

// blob is one content-addressed file of a layout.
type blob struct {
	desc v1.Descriptor
	json bool // an index, manifest or config: small, listed before layers
}

// Write reads the OCI image layout at layoutDir, which must hold exactly one
// image (a manifest or an index), and writes it to w as a bundle named ref.
// A ref with a digest must name the image's own digest.
//
// platforms ("os/arch[/variant]"), if any, narrow an index to those
// platforms: the index blob is written unchanged, so the image keeps the
// digest it was built or pinned as, with only those platforms' manifests,
// configs and layers, and index.json's descriptor lists them in
// bundleformat.AnnotationPlatforms. A layout already narrowed (its
// index.json descriptor carries that annotation, as the fetcher writes it)
// is bundled as it is, or narrowed further to a subset.
func Write(w io.Writer, layoutDir, ref string, comp bundleformat.Compression, platforms ...string) error {
	name, err := NormalizeReference(ref)
	if err != nil {
		return err
	}
	idx, err := readIndex(layoutDir)
	if err != nil {
		return err
	}
	if len(idx.Manifests) != 1 {
		return fmt.Errorf("failed to bundle %s: its index.json names %d images, want exactly 1", layoutDir, len(idx.Manifests))
	}
	top := idx.Manifests[0]
	if err := checkRefDigest(layoutDir, name, top); err != nil {
		return err
	}
	keep, err := keptPlatforms(layoutDir, top, platforms)
	if err != nil {
		return err
	}
	blobs := map[string]blob{}
	if err := collectTop(layoutDir, top, keep, blobs); err != nil {
		return err
	}
	indexJSON, err := bundleIndex(layoutDir, top, name, keep)
	if err != nil {
		return err
	}
	return writeTar(w, layoutDir, comp, indexJSON, blobs)
}

// checkRefDigest refuses a reference naming a digest other than the image's.
func checkRefDigest(layoutDir, name string, top v1.Descriptor) error {
	n, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return fmt.Errorf("invalid image reference %q: %w", name, err)
	}
	if d, ok := n.(reference.Digested); ok && d.Digest().String() != top.Digest.String() {
		return fmt.Errorf("failed to bundle %s as %s: the reference names digest %s, but the layout's image is %s", layoutDir, name, d.Digest(), top.Digest)
	}
	return nil
}

// bundleIndex is the bundle's index.json: the layout's one descriptor,
// named name, with its platform (a manifest) and the platforms kept (a
// narrowed index).
func bundleIndex(layoutDir string, top v1.Descriptor, name string, keep []string) ([]byte, error) {
	if top.MediaType.IsImage() && top.Platform == nil {
		p, err := platformOf(layoutDir, top)
		if err != nil {
			return nil, err
		}
		top.Platform = p
	}
	if top.MediaType.IsIndex() {
		// An index is imported for the platforms it holds; a platform on
		// it would be wrong.
		top.Platform = nil
	}
	// The layout's own index.json may carry other annotations (e.g. a base
	// name): only ours are written.
	top.Annotations = map[string]string{bundleformat.AnnotationRefName: name, bundleformat.AnnotationImageName: name}
	if keep != nil {
		top.Annotations[bundleformat.AnnotationPlatforms] = strings.Join(keep, ",")
	}
	// go-containerregistry sets artifactType on image descriptors; it is
	// meant for artifacts, and containerd does not need it.
	top.ArtifactType = ""
	out := v1.IndexManifest{SchemaVersion: 2, MediaType: bundleformat.MediaTypeOCIIndex, Manifests: []v1.Descriptor{top}}
	data, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("failed to encode index.json for %s: %w", layoutDir, err)
	}
	return data, nil
}

// writeTar writes the bundle: oci-layout, index.json, the JSON blobs then
// the layers, each sorted by path.
func writeTar(w io.Writer, layoutDir string, comp bundleformat.Compression, indexJSON []byte, blobs map[string]blob) error {
	var jsonPaths, layerPaths []string
	for p, b := range blobs {
		if b.json {
			jsonPaths = append(jsonPaths, p)
		} else {
			layerPaths = append(layerPaths, p)
		}
	}
	sort.Strings(jsonPaths)
	sort.Strings(layerPaths)

	cw, finish, err := compressor(w, comp)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(cw)
	if err := writeBytes(tw, bundleformat.LayoutEntry, []byte(bundleformat.LayoutContent)); err != nil {
		return err
	}
	if err := writeBytes(tw, bundleformat.IndexEntry, indexJSON); err != nil {
		return err
	}
	for _, p := range append(jsonPaths, layerPaths...) {
		if err := writeBlob(tw, layoutDir, p, blobs[p].desc); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("failed to finish bundle tar of %s: %w", layoutDir, err)
	}
	return finish()
}

func compressor(w io.Writer, comp bundleformat.Compression) (io.Writer, func() error, error) {
	switch comp {
	case bundleformat.Gzip:
		// No name and a zero mtime in the gzip header: same bytes always.
		gw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
		if err != nil {
			return nil, nil, fmt.Errorf("failed to start gzip: %w", err)
		}
		return gw, gw.Close, nil
	case bundleformat.Zstd:
		// One encoder goroutine: the output then does not depend on the
		// number of CPUs.
		zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
		if err != nil {
			return nil, nil, fmt.Errorf("failed to start zstd: %w", err)
		}
		return zw, zw.Close, nil
	}
	return w, func() error { return nil }, nil
}

func writeBytes(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(bundleformat.Header(name, int64(len(data)))); err != nil {
		return fmt.Errorf("failed to write bundle entry %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("failed to write bundle entry %s: %w", name, err)
	}
	return nil
}

func writeBlob(tw *tar.Writer, layoutDir, p string, d v1.Descriptor) error {
	src := filepath.Join(layoutDir, filepath.FromSlash(p))
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("failed to open blob %s of layout %s: %w", d.Digest, layoutDir, err)
	}
	defer f.Close()
	if err := tw.WriteHeader(bundleformat.Header(p, d.Size)); err != nil {
		return fmt.Errorf("failed to write bundle entry %s: %w", p, err)
	}
	// Copy exactly the descriptor's size: a blob of another size makes the
	// tar writer fail rather than write a wrong bundle.
	if _, err := io.CopyN(tw, f, d.Size); err != nil {
		return fmt.Errorf("failed to copy blob %s of layout %s (size %d): %w", d.Digest, layoutDir, d.Size, err)
	}
	if n, _ := f.Read(make([]byte, 1)); n != 0 {
		return fmt.Errorf("failed to copy blob %s of layout %s: larger than its descriptor's size %d", d.Digest, layoutDir, d.Size)
	}
	return nil
}

func readIndex(layoutDir string) (*v1.IndexManifest, error) {
	f, err := os.Open(filepath.Join(layoutDir, bundleformat.IndexEntry))
	if err != nil {
		return nil, fmt.Errorf("failed to read OCI layout %s: %w", layoutDir, err)
	}
	defer f.Close()
	idx, err := v1.ParseIndexManifest(f)
	if err != nil {
		return nil, fmt.Errorf("failed to parse index.json of %s: %w", layoutDir, err)
	}
	return idx, nil
}

func blobPath(d v1.Descriptor) string {
	return bundleformat.BlobPrefix + d.Digest.Hex
}

func readBlob(layoutDir string, d v1.Descriptor) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(layoutDir, filepath.FromSlash(blobPath(d))))
	if err != nil {
		return nil, fmt.Errorf("failed to read blob %s of layout %s: %w", d.Digest, layoutDir, err)
	}
	h, _, err := v1.SHA256(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if h != d.Digest || int64(len(data)) != d.Size {
		return nil, fmt.Errorf("blob %s of layout %s does not match its descriptor: content has digest %s and size %d, want size %d", d.Digest, layoutDir, h, len(data), d.Size)
	}
	return data, nil
}

// collect records d and every blob it references. Layers are not read
// here (they are verified as the bundle is written, by size); JSON blobs are
// verified against their digests because their contents are followed.
func collect(layoutDir string, d v1.Descriptor, out map[string]blob) error {
	if d.Digest.Algorithm != "sha256" {
		return fmt.Errorf("failed to bundle %s: blob %s uses an unsupported digest algorithm", layoutDir, d.Digest)
	}
	switch {
	case d.MediaType.IsIndex():
		im, err := readIndexBlob(layoutDir, d)
		if err != nil {
			return err
		}
		out[blobPath(d)] = blob{desc: d, json: true}
		for _, c := range im.Manifests {
			if err := collect(layoutDir, c, out); err != nil {
				return err
			}
		}
	case d.MediaType.IsImage():
		data, err := readBlob(layoutDir, d)
		if err != nil {
			return err
		}
		out[blobPath(d)] = blob{desc: d, json: true}
		m, err := v1.ParseManifest(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("failed to parse manifest %s of layout %s: %w", d.Digest, layoutDir, err)
		}
		if _, err := readBlob(layoutDir, m.Config); err != nil {
			return err
		}
		out[blobPath(m.Config)] = blob{desc: m.Config, json: true}
		for _, l := range m.Layers {
			if l.Digest.Algorithm != "sha256" {
				return fmt.Errorf("failed to bundle %s: layer %s uses an unsupported digest algorithm", layoutDir, l.Digest)
			}
			if _, seen := out[blobPath(l)]; !seen {
				out[blobPath(l)] = blob{desc: l}
			}
		}
	default:
		return fmt.Errorf("failed to bundle %s: descriptor %s has media type %q, neither an image index nor a manifest", layoutDir, d.Digest, d.MediaType)
	}
	return nil
}

// platformOf reads a manifest's platform from its config.
func platformOf(layoutDir string, d v1.Descriptor) (*v1.Platform, error) {
	data, err := readBlob(layoutDir, d)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("failed to parse manifest %s of layout %s: %w", d.Digest, layoutDir, err)
	}
	cdata, err := readBlob(layoutDir, m.Config)
	if err != nil {
		return nil, err
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(cdata))
	if err != nil {
		return nil, fmt.Errorf("failed to parse config %s of layout %s: %w", m.Config.Digest, layoutDir, err)
	}
	if cf.OS == "" || cf.Architecture == "" {
		return nil, fmt.Errorf("config %s of layout %s names no os/architecture", m.Config.Digest, layoutDir)
	}
	return &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}, nil
}
