// Package erofscache is the appliance's EROFS layer content cache as code:
// where the cache lives in the appliance, where a layer's EROFS blob sits in
// it (keyed by the layer's diffID) and the dm-verity sidecar next to it.
//
// The layout is containerd's (erofs snapshotter, layer_content_caches):
// <dir>/<algorithm>/<first two hex>/<hex>.erofs, with <blob>.dmverity holding
// {"roothash", "hashoffset"} of a hash tree appended to the blob. containerd
// keeps its copy of the layout in an internal package
// (internal/erofsutils.CacheBlobPath, internal/dmverity.DmverityMetadata),
// which cannot be imported: this package restates it once for the build
// (build/oci/erofs writes the cache), preseed (which checks entries exist)
// and the tests, and the E2E proves containerd reads what it describes.
//
// It must not convert layers, talk to containerd, or write files: it only
// names paths and parses and encodes the sidecar.
package erofscache

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
)

const (
	// Root is where the appliance carries its cache (read-only, in the
	// initramfs): containerd's erofs snapshotter lists it in
	// layer_content_caches.
	Root = "/containerd/erofs-cache"
	// BlobExt ends the name of every blob.
	BlobExt = ".erofs"
	// SidecarExt is appended to a blob's path to name its dm-verity sidecar.
	SidecarExt = ".dmverity"
	// VerityBlockSize is the data and hash block size of every hash tree
	// (dm-verity's and containerd's default, the page size).
	VerityBlockSize = 4096
	// MaxSidecarSize bounds a sidecar: it holds two short fields.
	MaxSidecarSize = 4096
)

// RelPath is the path of diffID's blob relative to a cache directory, with
// forward slashes: sha256/ab/abcd….erofs.
func RelPath(diffID digest.Digest) string {
	enc := diffID.Encoded()
	return path.Join(diffID.Algorithm().String(), enc[:2], enc+BlobExt)
}

// BlobPath is the path of diffID's blob in the cache directory dir.
func BlobPath(dir string, diffID digest.Digest) string {
	return filepath.Join(dir, filepath.FromSlash(RelPath(diffID)))
}

// SidecarPath is the path of the dm-verity sidecar of the blob at blob.
func SidecarPath(blob string) string { return blob + SidecarExt }

// Sidecar is the content of a blob's .dmverity file: the hash tree's root
// hash and the offset of its superblock in the blob (the size of the EROFS
// image rounded up to VerityBlockSize). Every other parameter is in that
// superblock.
type Sidecar struct {
	RootHash   string `json:"roothash"`
	HashOffset uint64 `json:"hashoffset"`
}

// Validate checks what containerd needs to open the device: a sha256 root
// hash in lower-case hex and a block-aligned, non-zero offset.
func (s Sidecar) Validate() error {
	if len(s.RootHash) != 64 || strings.ToLower(s.RootHash) != s.RootHash {
		return fmt.Errorf("root hash %q is not 64 lower-case hex digits", s.RootHash)
	}
	if _, err := hex.DecodeString(s.RootHash); err != nil {
		return fmt.Errorf("root hash %q is not hex: %w", s.RootHash, err)
	}
	if s.HashOffset == 0 || s.HashOffset%VerityBlockSize != 0 {
		return fmt.Errorf("hash offset %d is not a positive multiple of %d", s.HashOffset, VerityBlockSize)
	}
	return nil
}

// Encode gives the sidecar's bytes, as containerd writes them (indented
// JSON, no trailing newline), so that a cache this project builds is the
// cache `ctr images build-erofs-cache --dmverity` would build.
func (s Sidecar) Encode() ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return json.MarshalIndent(s, "", "  ")
}

// ParseSidecar reads a sidecar strictly: unknown fields, trailing data and
// invalid values are errors.
func ParseSidecar(b []byte) (Sidecar, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Sidecar
	if err := dec.Decode(&s); err != nil {
		return Sidecar{}, fmt.Errorf("not a dm-verity sidecar: %w", err)
	}
	if dec.More() {
		return Sidecar{}, fmt.Errorf("not a dm-verity sidecar: data after the object")
	}
	if err := s.Validate(); err != nil {
		return Sidecar{}, fmt.Errorf("invalid dm-verity sidecar: %w", err)
	}
	return s, nil
}

// ReadSidecar reads and parses the sidecar of the blob at blob; errors name
// the sidecar's path.
func ReadSidecar(blob string) (Sidecar, error) {
	p := SidecarPath(blob)
	f, err := os.Open(p)
	if err != nil {
		return Sidecar{}, fmt.Errorf("failed to open dm-verity sidecar: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSidecarSize+1))
	if err != nil {
		return Sidecar{}, fmt.Errorf("failed to read dm-verity sidecar %s: %w", p, err)
	}
	if len(b) > MaxSidecarSize {
		return Sidecar{}, fmt.Errorf("dm-verity sidecar %s: larger than %d bytes", p, MaxSidecarSize)
	}
	s, err := ParseSidecar(b)
	if err != nil {
		return Sidecar{}, fmt.Errorf("dm-verity sidecar %s: %w", p, err)
	}
	return s, nil
}
