// Command corruptbundle corrupts one bundle inside a preseed tree tar "at
// rest", after the build wrote the tree and its manifest: one byte of the
// bundle's image config is flipped (same size), so the bundle no longer
// matches its digests nor the manifest's sha256. Every other entry is copied
// unchanged. It is a test tool: it must never be part of a shipped image.
package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// corruptBundle flips one byte of the config blob of the bundle in data.
func corruptBundle(data []byte) ([]byte, error) {
	type entry struct {
		hdr  *tar.Header
		data []byte
	}
	var entries []entry
	at := make(map[string]int)
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("failed to read the bundle: %w", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", h.Name, err)
		}
		at[h.Name] = len(entries)
		entries = append(entries, entry{h, b})
	}
	i, ok := at["index.json"]
	if !ok {
		return nil, errors.New("the bundle has no index.json")
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(entries[i].data, &idx); err != nil || len(idx.Manifests) != 1 {
		return nil, fmt.Errorf("index.json is not a one-image index (%v)", err)
	}
	man, err := manifestOf(idx.Manifests[0], func(h v1.Hash) ([]byte, bool) {
		i, ok := at["blobs/sha256/"+h.Hex]
		if !ok {
			return nil, false
		}
		return entries[i].data, true
	})
	if err != nil {
		return nil, err
	}
	c, ok := at["blobs/sha256/"+man.Config.Digest.Hex]
	if !ok {
		return nil, errors.New("the bundle lacks its config blob")
	}
	cfg := entries[c].data
	// Flip a byte inside the last JSON value: same size, same tar layout.
	end := bytes.LastIndexByte(cfg, '}')
	if end < 1 {
		return nil, errors.New("config blob too small to corrupt")
	}
	cfg[end-1] ^= 0x01

	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, e := range entries {
		if err := tw.WriteHeader(e.hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if out.Len() != len(data) {
		return nil, fmt.Errorf("the corrupted bundle is %d bytes, the original %d", out.Len(), len(data))
	}
	return out.Bytes(), nil
}

// manifestOf reads the image manifest d names; for an index, the first of
// its manifests that the bundle holds (a narrowed index holds only some).
func manifestOf(d v1.Descriptor, blob func(v1.Hash) ([]byte, bool)) (*v1.Manifest, error) {
	data, ok := blob(d.Digest)
	if !ok {
		return nil, fmt.Errorf("the bundle lacks blob %s", d.Digest)
	}
	if d.MediaType.IsImage() {
		man, err := v1.ParseManifest(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("bad manifest %s: %w", d.Digest, err)
		}
		return man, nil
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("bad index %s: %w", d.Digest, err)
	}
	for _, c := range idx.Manifests {
		if _, ok := blob(c.Digest); ok && c.MediaType.IsImage() {
			return manifestOf(c, blob)
		}
	}
	return nil, fmt.Errorf("index %s: the bundle holds none of its manifests", d.Digest)
}

func run(in, entry, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", in, err)
	}
	defer f.Close()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tr := tar.NewReader(f)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", in, err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return fmt.Errorf("failed to read %s from %s: %w", h.Name, in, err)
		}
		if h.Name == entry {
			found = true
			if data, err = corruptBundle(data); err != nil {
				return fmt.Errorf("%s in %s: %w", entry, in, err)
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if !found {
		return fmt.Errorf("%s has no entry %s", in, entry)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

func main() {
	in := flag.String("in", "", "a preseed tree tar")
	entry := flag.String("entry", "", "the bundle's entry in it, e.g. containerd/preseed/k8s.io/corrupt.tar")
	out := flag.String("out", "", "the tree tar to write")
	flag.Parse()
	if err := run(*in, *entry, *out); err != nil {
		fmt.Fprintln(os.Stderr, "corruptbundle:", err)
		os.Exit(1)
	}
}
