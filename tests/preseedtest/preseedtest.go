// Package preseedtest makes synthetic preseed bundles for tests and
// benchmarks, following docs/bundle-format.md: an OCI image layout in one tar
// (optionally gzip or zstd), regular-file entries only, oci-layout, then
// index.json, then JSON blobs sorted by path, then layers sorted by path.
//
// Entries can be edited before writing so tests can break a bundle in one
// precise way. It must not be used by the appliance itself.
package preseedtest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// Image is one image of a bundle, with its full reference.
type Image struct {
	Name  string
	Image v1.Image
}

// Entry is one tar entry of a bundle.
type Entry struct {
	Header tar.Header
	Data   []byte
	// Layer tells a layer blob from a JSON blob or layout file.
	Layer bool
}

// layer is an in-memory gzip layer whose digests are known up front.
type layer struct {
	compressed     []byte
	digest, diffID v1.Hash
}

func (l *layer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *layer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *layer) Size() (int64, error)                { return int64(len(l.compressed)), nil }
func (l *layer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *layer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}
func (l *layer) Uncompressed() (io.ReadCloser, error) {
	zr, err := gzip.NewReader(bytes.NewReader(l.compressed))
	if err != nil {
		return nil, err
	}
	return zr, nil
}

func sha(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// RandomLayer returns a gzip layer holding one file of size pseudo-random
// bytes drawn from seed (the same seed gives the same layer).
func RandomLayer(seed uint64, size int64) (v1.Layer, error) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data-%d", seed), Size: size, Mode: 0o644, Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	buf := make([]byte, 64*1024)
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		for i := 0; i < int(n); i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8 && i+j < int(n); j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := tw.Write(buf[:n]); err != nil {
			return nil, err
		}
		left -= n
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return &layer{compressed: gz.Bytes(), digest: sha(gz.Bytes()), diffID: sha(raw.Bytes())}, nil
}

// NewImage returns a single-platform image of the host's platform made of
// layers, with a config that says which.
func NewImage(layers ...v1.Layer) (v1.Image, error) {
	return NewPlatformImage(v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}, layers...)
}

// NewPlatformImage is NewImage for platform p.
func NewPlatformImage(p v1.Platform, layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Cmd = []string{"/data"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.MediaType(mutate.ConfigMediaType(img, types.OCIConfigJSON), types.OCIManifestSchema1), nil
}

// RandomImage is NewImage of RandomLayers, one per size, seeded seed, seed+1, ...
func RandomImage(seed uint64, sizes ...int64) (v1.Image, error) {
	var ls []v1.Layer
	for i, s := range sizes {
		l, err := RandomLayer(seed+uint64(i), s)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	return NewImage(ls...)
}

func file(name string, data []byte, layer bool) Entry {
	return Entry{Header: *bundleformat.Header(name, int64(len(data))), Data: data, Layer: layer}
}

// blobs are the JSON and layer blobs of a bundle, by entry name.
type blobs struct {
	json, layers map[string][]byte
}

// add adds the manifest, config and layers of img and returns the
// manifest's descriptor, with the config's platform.
func (b blobs) add(img v1.Image) (v1.Descriptor, error) {
	m, err := img.Manifest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return v1.Descriptor{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Descriptor{}, err
	}
	d := sha(raw)
	b.json[bundleformat.BlobPrefix+d.Hex] = raw
	b.json[bundleformat.BlobPrefix+m.Config.Digest.Hex] = cfg
	for _, l := range m.Layers {
		ly, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return v1.Descriptor{}, err
		}
		rc, err := ly.Compressed()
		if err != nil {
			return v1.Descriptor{}, err
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return v1.Descriptor{}, err
		}
		b.layers[bundleformat.BlobPrefix+l.Digest.Hex] = data
	}
	return v1.Descriptor{
		MediaType: m.MediaType,
		Size:      int64(len(raw)),
		Digest:    d,
		Platform:  &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
	}, nil
}

func named(d v1.Descriptor, name string) v1.Descriptor {
	d.Annotations = map[string]string{bundleformat.AnnotationRefName: name, bundleformat.AnnotationImageName: name}
	return d
}

// Entries returns the entries of a bundle of imgs, in the format's order.
func Entries(imgs ...Image) ([]Entry, error) {
	b := blobs{json: map[string][]byte{}, layers: map[string][]byte{}}
	var top []v1.Descriptor
	for _, im := range imgs {
		d, err := b.add(im.Image)
		if err != nil {
			return nil, err
		}
		top = append(top, named(d, im.Name))
	}
	return b.entries(top)
}

// Index is a multi-platform image: an OCI image index of Images, each
// listed with its config's platform.
type Index struct {
	Name   string
	Images []v1.Image
	// Held narrows the bundle to these platforms (os/arch[/variant]), as
	// the build narrows an index pulled for some platforms: the index blob
	// is kept whole (its digest is the image's), the other platforms'
	// manifests, configs and layers are left out, and index.json's
	// descriptor lists Held in bundleformat.AnnotationPlatforms. Nil holds
	// every platform.
	Held []string
}

// IndexEntries returns the entries of a bundle of one image index, in the
// format's order, and the index's digest.
func IndexEntries(ix Index) ([]Entry, v1.Hash, error) {
	b := blobs{json: map[string][]byte{}, layers: map[string][]byte{}}
	var idx v1.IndexManifest
	idx.SchemaVersion = 2
	idx.MediaType = types.OCIImageIndex
	for _, img := range ix.Images {
		all := blobs{json: map[string][]byte{}, layers: map[string][]byte{}}
		d, err := all.add(img)
		if err != nil {
			return nil, v1.Hash{}, err
		}
		idx.Manifests = append(idx.Manifests, d)
		if ix.Held != nil && !slices.Contains(ix.Held, bundleformat.FormatPlatform(platformOf(d))) {
			continue
		}
		maps.Copy(b.json, all.json)
		maps.Copy(b.layers, all.layers)
	}
	raw, err := json.Marshal(idx)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	d := sha(raw)
	b.json[bundleformat.BlobPrefix+d.Hex] = raw
	top := named(v1.Descriptor{MediaType: types.OCIImageIndex, Size: int64(len(raw)), Digest: d}, ix.Name)
	if ix.Held != nil {
		held := slices.Sorted(slices.Values(ix.Held))
		top.Annotations[bundleformat.AnnotationPlatforms] = strings.Join(held, ",")
	}
	e, err := b.entries([]v1.Descriptor{top})
	return e, d, err
}

func platformOf(d v1.Descriptor) ocispec.Platform {
	return ocispec.Platform{OS: d.Platform.OS, Architecture: d.Platform.Architecture, Variant: d.Platform.Variant}
}

// entries lays out index.json of top and the blobs in the format's order.
func (b blobs) entries(top []v1.Descriptor) ([]Entry, error) {
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: top}
	ij, err := json.Marshal(idx)
	if err != nil {
		return nil, err
	}
	entries := []Entry{
		file(bundleformat.LayoutEntry, []byte(bundleformat.LayoutContent), false),
		file(bundleformat.IndexEntry, ij, false),
	}
	for _, set := range []struct {
		m     map[string][]byte
		layer bool
	}{{b.json, false}, {b.layers, true}} {
		for _, n := range slices.Sorted(maps.Keys(set.m)) {
			entries = append(entries, file(n, set.m[n], set.layer))
		}
	}
	return entries, nil
}

// Write writes entries as a bundle at path, compressed as its name says
// (bundleformat.FromFileName; none for another name). It returns the
// file's size.
func Write(path string, entries []Entry) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var w io.Writer = f
	var closer io.Closer
	switch comp, _ := bundleformat.FromFileName(path); comp {
	case bundleformat.Gzip:
		zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
		if err != nil {
			return 0, err
		}
		w, closer = zw, zw
	case bundleformat.Zstd:
		zw, err := zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			return 0, err
		}
		w, closer = zw, zw
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := e.Header
		if err := tw.WriteHeader(&h); err != nil {
			return 0, fmt.Errorf("failed to write header of %s: %w", h.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.Data); err != nil {
				return 0, fmt.Errorf("failed to write %s: %w", h.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	if closer != nil {
		if err := closer.Close(); err != nil {
			return 0, err
		}
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// WriteBundle writes a well-formed bundle of imgs at path.
func WriteBundle(path string, imgs ...Image) (int64, error) {
	entries, err := Entries(imgs...)
	if err != nil {
		return 0, err
	}
	return Write(path, entries)
}
