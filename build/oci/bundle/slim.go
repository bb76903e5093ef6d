package bundle

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// DetectCompression tells how the bundle file at path is compressed, by
// its magic number.
func DetectCompression(path string) (bundleformat.Compression, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("failed to open bundle %s: %w", path, err)
	}
	defer f.Close()
	magic, err := bufio.NewReader(f).Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("failed to read bundle %s: %w", path, err)
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return bundleformat.Gzip, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return bundleformat.Zstd, nil
	}
	return bundleformat.None, nil
}

// WriteSlim writes to w the bundle file at in without the layer blobs
// cached (held in the appliance's EROFS layer content cache instead), with
// index.json's descriptor listing them in
// bundleformat.AnnotationCachedLayers, compressed as in is. Every other
// entry is copied as it is, in order, so the same input gives the same
// bytes.
func WriteSlim(w io.Writer, in string, cached []digest.Digest) error {
	comp, err := DetectCompression(in)
	if err != nil {
		return err
	}
	f, err := os.Open(in)
	if err != nil {
		return fmt.Errorf("failed to open bundle %s: %w", in, err)
	}
	defer f.Close()
	rc, err := Decompress(f)
	if err != nil {
		return fmt.Errorf("bundle %s: %w", in, err)
	}
	defer rc.Close()
	skip := map[digest.Digest]bool{}
	for _, d := range cached {
		skip[d] = true
	}
	cw, finish, err := compressor(w, comp)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(cw)
	if err := copySlim(tar.NewReader(rc), tw, skip, bundleformat.JoinCachedLayers(cached)); err != nil {
		return fmt.Errorf("failed to write the slim bundle of %s: %w", in, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("failed to finish the slim bundle of %s: %w", in, err)
	}
	return finish()
}

// copySlim copies every entry but the skipped blobs, annotating index.json.
func copySlim(tr *tar.Reader, tw *tar.Writer, skip map[digest.Digest]bool, annotation string) error {
	left := len(skip)
	for {
		hdr, err := bundleformat.Next(tr)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if d, ok := bundleformat.BlobDigest(hdr.Name); ok && skip[d] {
			left--
			continue
		}
		if hdr.Name == bundleformat.IndexEntry {
			if err := writeSlimIndex(tr, tw, hdr, annotation); err != nil {
				return err
			}
			continue
		}
		if err := tw.WriteHeader(bundleformat.Header(hdr.Name, hdr.Size)); err != nil {
			return fmt.Errorf("failed to write %s: %w", hdr.Name, err)
		}
		if _, err := io.CopyN(tw, tr, hdr.Size); err != nil {
			return fmt.Errorf("failed to copy %s: %w", hdr.Name, err)
		}
	}
	if left != 0 {
		return fmt.Errorf("%d of the %d cached layers are not in the bundle", left, len(skip))
	}
	return nil
}

// writeSlimIndex writes index.json with annotation in
// AnnotationCachedLayers of its descriptors (none when it is empty).
func writeSlimIndex(tr *tar.Reader, tw *tar.Writer, hdr *tar.Header, annotation string) error {
	b, err := bundleformat.ReadSmall(tr, hdr, bundleformat.MaxJSONBlob)
	if err != nil {
		return err
	}
	if annotation != "" {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("failed to parse index.json: %w", err)
		}
		for i := range idx.Manifests {
			if idx.Manifests[i].Annotations == nil {
				idx.Manifests[i].Annotations = map[string]string{}
			}
			idx.Manifests[i].Annotations[bundleformat.AnnotationCachedLayers] = annotation
		}
		if b, err = json.Marshal(idx); err != nil {
			return fmt.Errorf("failed to encode index.json: %w", err)
		}
	}
	return writeBytes(tw, bundleformat.IndexEntry, b)
}
