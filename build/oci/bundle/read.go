package bundle

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

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

// checkName accepts only an image name as Write writes it: a fully
// normalised reference.
func checkName(name string) error {
	norm, err := NormalizeReference(name)
	if err != nil {
		return err
	}
	if norm != name {
		return fmt.Errorf("not normalised: want %q", norm)
	}
	return nil
}

// Inspect reads a bundle file up to the end of its JSON blobs, with the
// format's one metadata reader following every manifest it holds (of a
// narrowed index, the listed platforms'), and returns what
// it names: the bundle fields of its preseed manifest entry (Reference,
// IndexDigest, Target and Manifests; the caller fills in the rest). It
// checks the JSON blobs' digests; it does not read the layers.
func Inspect(path string) (*bundleformat.Entry, error) {
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
	m, err := bundleformat.ReadMetadata(context.Background(), tar.NewReader(rc), bundleformat.Policy{CheckName: checkName})
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	if len(m.Images) != 1 {
		return nil, fmt.Errorf("bundle %s: index.json names %d images, want exactly 1", path, len(m.Images))
	}
	im := m.Images[0]
	e := &bundleformat.Entry{Reference: im.Name, IndexDigest: digest.FromBytes(m.Index), Target: im.Target}
	var held []digest.Digest
	for _, mf := range im.Manifests {
		e.Manifests = append(e.Manifests, bundleformat.ManifestImage{Digest: mf.Descriptor.Digest, Platform: mf.Descriptor.Platform})
		held = append(held, mf.Descriptor.Digest)
	}
	refs, err := bundleformat.References(im.Name, im.Target.Digest, held...)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	e.References = refs
	return e, nil
}
