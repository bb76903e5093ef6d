package bundle

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

// maxMetadataBlob bounds what Inspect buffers of one blob: indexes,
// manifests and configs are small; a larger blob is a layer.
const maxMetadataBlob = 4 << 20

// Manifest is one image manifest of a bundle.
type Manifest struct {
	Digest   string       `json:"digest"`
	Platform *v1.Platform `json:"platform,omitempty"`
}

// Info is what a bundle names and holds, learnt without reading its layers.
type Info struct {
	// Reference is the name in io.containerd.image.name.
	Reference string `json:"reference"`
	// IndexDigest is the sha256 of the bundle's index.json.
	IndexDigest string `json:"index_digest"`
	// Target is the descriptor index.json names: what containerd records
	// as the image's target.
	Target v1.Descriptor `json:"target"`
	// Manifests are the image manifests reachable from Target.
	Manifests []Manifest `json:"manifests"`
}

// Decompress returns a reader of the tar inside a bundle file, recognising
// gzip and zstd by their magic numbers.
func Decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReader(r)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("failed to read bundle header: %w", err)
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		gr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("failed to start gzip: %w", err)
		}
		return gr, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("failed to start zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}

// Inspect reads a bundle file up to the end of its metadata blobs and
// returns what it names. It checks the metadata blobs' digests; it does not
// read the layers.
func Inspect(path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open bundle %s: %w", path, err)
	}
	defer f.Close()
	rc, err := Decompress(f)
	if err != nil {
		return nil, fmt.Errorf("failed to read bundle %s: %w", path, err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)

	var idx *v1.IndexManifest
	var indexDigest v1.Hash
	blobs := map[v1.Hash][]byte{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("failed to read bundle %s: %w", path, err)
		}
		switch {
		case hdr.Name == "index.json":
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, fmt.Errorf("failed to read index.json of bundle %s: %w", path, err)
			}
			indexDigest, _, _ = v1.SHA256(bytes.NewReader(data))
			if idx, err = v1.ParseIndexManifest(bytes.NewReader(data)); err != nil {
				return nil, fmt.Errorf("failed to parse index.json of bundle %s: %w", path, err)
			}
		case strings.HasPrefix(hdr.Name, "blobs/sha256/") && hdr.Size <= maxMetadataBlob:
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, fmt.Errorf("failed to read %s of bundle %s: %w", hdr.Name, path, err)
			}
			h, _, _ := v1.SHA256(bytes.NewReader(data))
			if "blobs/sha256/"+h.Hex != hdr.Name {
				return nil, fmt.Errorf("bundle %s: entry %s has content digest %s", path, hdr.Name, h)
			}
			blobs[h] = data
		}
		if idx != nil {
			if info, done, err := resolve(idx, blobs); err != nil {
				return nil, fmt.Errorf("bundle %s: %w", path, err)
			} else if done {
				info.IndexDigest = indexDigest.String()
				return info, nil
			}
		}
	}
	if idx == nil {
		return nil, fmt.Errorf("bundle %s has no index.json", path)
	}
	return nil, fmt.Errorf("bundle %s lacks manifests or indexes that its index.json refers to", path)
}

// resolve walks from idx's only descriptor through the blobs read so far;
// done is false while a needed index or manifest has not been read yet.
func resolve(idx *v1.IndexManifest, blobs map[v1.Hash][]byte) (*Info, bool, error) {
	if len(idx.Manifests) != 1 {
		return nil, false, fmt.Errorf("index.json names %d images, want exactly 1", len(idx.Manifests))
	}
	top := idx.Manifests[0]
	info := &Info{Reference: top.Annotations[AnnotationImageName], Target: top}
	var walk func(d v1.Descriptor) (bool, error)
	walk = func(d v1.Descriptor) (bool, error) {
		switch {
		case d.MediaType.IsIndex():
			data, ok := blobs[d.Digest]
			if !ok {
				return false, nil
			}
			im, err := v1.ParseIndexManifest(bytes.NewReader(data))
			if err != nil {
				return false, fmt.Errorf("failed to parse index %s: %w", d.Digest, err)
			}
			for _, c := range im.Manifests {
				if ok, err := walk(c); !ok || err != nil {
					return ok, err
				}
			}
			return true, nil
		case d.MediaType.IsImage():
			info.Manifests = append(info.Manifests, Manifest{Digest: d.Digest.String(), Platform: d.Platform})
			return true, nil
		}
		return false, fmt.Errorf("descriptor %s has media type %q, neither an index nor a manifest", d.Digest, d.MediaType)
	}
	ok, err := walk(top)
	if !ok || err != nil {
		return nil, false, err
	}
	return info, true, nil
}

// marshalSorted encodes v as indented JSON ending in a newline; Go's encoder
// sorts map keys, and callers sort slices, so the bytes are deterministic.
func marshalSorted(v any) ([]byte, error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}
