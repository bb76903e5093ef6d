// Command corruptbundle makes the E2E's corrupt bundle from a good one: the
// image is renamed (so it claims no name of the good bundles) and one byte of
// its config blob is flipped, so the blob no longer matches its digest, as
// after corruption at rest. It writes the result as a tar holding
// containerd/preseed/<namespace>/<file>, to merge into an initramfs.
// It is a test tool: it must never be part of a shipped image.
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
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func corrupt(in, name string) ([]byte, error) {
	f, err := os.Open(in)
	if err != nil {
		return nil, fmt.Errorf("failed to open %s: %w", in, err)
	}
	defer f.Close()
	type entry struct {
		hdr  *tar.Header
		data []byte
	}
	var entries []entry
	blobs := make(map[string]int)
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", in, err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("failed to read %s from %s: %w", h.Name, in, err)
		}
		blobs[h.Name] = len(entries)
		entries = append(entries, entry{h, data})
	}
	// index.json -> manifest -> config.
	idxAt, ok := blobs["index.json"]
	if !ok {
		return nil, fmt.Errorf("%s has no index.json", in)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(entries[idxAt].data, &idx); err != nil || len(idx.Manifests) != 1 {
		return nil, fmt.Errorf("%s: index.json is not a one-image index (%v)", in, err)
	}
	for _, k := range []string{"org.opencontainers.image.ref.name", "io.containerd.image.name"} {
		idx.Manifests[0].Annotations[k] = name
	}
	if entries[idxAt].data, err = json.Marshal(idx); err != nil {
		return nil, err
	}
	entries[idxAt].hdr.Size = int64(len(entries[idxAt].data))
	mAt, ok := blobs["blobs/sha256/"+idx.Manifests[0].Digest.Hex]
	if !ok {
		return nil, fmt.Errorf("%s lacks its manifest blob", in)
	}
	var m v1.Manifest
	if err := json.Unmarshal(entries[mAt].data, &m); err != nil {
		return nil, fmt.Errorf("%s: bad manifest: %w", in, err)
	}
	cAt, ok := blobs["blobs/sha256/"+m.Config.Digest.Hex]
	if !ok {
		return nil, fmt.Errorf("%s lacks its config blob", in)
	}
	cfg := entries[cAt].data
	i := bytes.LastIndexByte(cfg, '}') // a byte that keeps the size
	if i < 1 {
		return nil, errors.New("config blob too small to corrupt")
	}
	cfg[i-1] ^= 0x01

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
	return out.Bytes(), nil
}

func main() {
	in := flag.String("in", "", "a good bundle (uncompressed tar)")
	name := flag.String("name", "", "the image name the corrupt bundle claims")
	path := flag.String("path", "", "its path in the tree, e.g. containerd/preseed/k8s.io/corrupt.tar")
	out := flag.String("out", "", "the tar to write")
	flag.Parse()
	data, err := corrupt(*in, *name)
	if err == nil {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: *path, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX})
		if err == nil {
			_, err = tw.Write(data)
		}
		if err == nil {
			err = tw.Close()
		}
		if err == nil {
			err = os.WriteFile(*out, buf.Bytes(), 0o644)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "corruptbundle:", err)
		os.Exit(1)
	}
}
