// Package erofs builds the appliance's EROFS layer content cache
// (core/erofscache) at build time: it converts each layer blob of a bundle
// into an EROFS image with containerd's own converter (mkfs.erofs, which
// must be on PATH), appends a dm-verity hash tree with a superblock whose
// parameters and UUID are derived from the layer alone, writes the
// .dmverity sidecar, and writes the "slim" bundle that no longer carries
// the converted layers.
//
// Same layer in, same bytes out: the EROFS UUID and build time are fixed
// and the verity salt and UUID come from the diffID. It must not talk to
// containerd, a registry or the network, and must not decide where the
// cache lives in the appliance (core/erofscache does).
package erofs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/content"
	erofsconv "github.com/containerd/containerd/v2/core/images/converter/erofs"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	buildverity "github.com/appliance-bundler/appliance/build/verity"
	"github.com/appliance-bundler/appliance/core/erofscache"
	"github.com/appliance-bundler/appliance/core/node"
)

// Entry is one converted layer in a cache directory.
type Entry struct {
	// Digest is the layer blob's digest (compressed, as in the manifest).
	Digest digest.Digest
	// DiffID is the digest of the uncompressed tar: the cache key.
	DiffID digest.Digest
	// Path is the blob's path relative to the cache directory
	// (erofscache.RelPath).
	Path string
	// Size is the blob's size in bytes, hash tree included.
	Size int64
	// RootHash is the dm-verity root hash (hex), as in the sidecar.
	RootHash string
}

// ConvertLayer converts the layer blob read from layer (described by desc,
// gzip, zstd or uncompressed) into cacheDir at erofscache.BlobPath(cacheDir,
// diffID), with its hash tree and sidecar. The uncompressed content must
// have digest diffID (from the image config). An entry already in cacheDir
// is reused without reading layer.
func ConvertLayer(ctx context.Context, cacheDir string, layer io.Reader, desc ocispec.Descriptor, diffID digest.Digest) (Entry, error) {
	if err := diffID.Validate(); err != nil {
		return Entry{}, fmt.Errorf("layer %s: invalid diffID: %w", desc.Digest, err)
	}
	blob := erofscache.BlobPath(cacheDir, diffID)
	if e, ok, err := existing(blob, desc.Digest, diffID); err != nil || ok {
		return e, err
	}
	tmp, err := os.MkdirTemp(cacheDir, ".convert-")
	if err != nil {
		return Entry{}, fmt.Errorf("failed to create a work directory in %s: %w", cacheDir, err)
	}
	defer os.RemoveAll(tmp)

	out := filepath.Join(tmp, "layer.erofs")
	if err := mkfs(ctx, tmp, layer, desc, diffID, out); err != nil {
		return Entry{}, err
	}
	sc, size, err := appendVerity(out, diffID)
	if err != nil {
		return Entry{}, fmt.Errorf("layer %s (diffID %s): %w", desc.Digest, diffID, err)
	}
	if err := place(out, blob, sc); err != nil {
		return Entry{}, fmt.Errorf("layer %s (diffID %s): %w", desc.Digest, diffID, err)
	}
	return Entry{Digest: desc.Digest, DiffID: diffID, Path: erofscache.RelPath(diffID), Size: size, RootHash: sc.RootHash}, nil
}

// existing returns the entry of a blob already converted (both the blob
// and its sidecar present).
func existing(blob string, d, diffID digest.Digest) (Entry, bool, error) {
	sc, err := erofscache.ReadSidecar(blob)
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, err
	}
	fi, err := os.Stat(blob)
	if err != nil {
		return Entry{}, false, fmt.Errorf("cache entry of layer %s: %w", d, err)
	}
	return Entry{Digest: d, DiffID: diffID, Path: erofscache.RelPath(diffID), Size: fi.Size(), RootHash: sc.RootHash}, true, nil
}

// mkfs stores the layer in a content store under dir (the converter reads
// from one; writing checks the blob's digest and size) and converts it to
// out, checking the diffID the converter computed.
func mkfs(ctx context.Context, dir string, layer io.Reader, desc ocispec.Descriptor, diffID digest.Digest, out string) error {
	cs, err := local.NewStore(filepath.Join(dir, "content"))
	if err != nil {
		return fmt.Errorf("failed to open a content store in %s: %w", dir, err)
	}
	if err := content.WriteBlob(ctx, cs, "layer-"+desc.Digest.String(), layer, desc); err != nil {
		return fmt.Errorf("failed to read layer %s: %w", desc.Digest, err)
	}
	got, err := erofsconv.ConvertLayerToErofs(ctx, cs, desc, out, erofsconv.WithMkfsOptions(node.ErofsMkfsOptions()))
	if err != nil {
		return fmt.Errorf("failed to convert layer %s to EROFS: %w", desc.Digest, err)
	}
	if got != diffID {
		return fmt.Errorf("layer %s uncompresses to %s, but the image config gives diffID %s", desc.Digest, got, diffID)
	}
	return nil
}

// verityUUID is the hash tree superblock's UUID: derived from the diffID
// (containerd draws a random one) so the blob is reproducible; a namespace
// of its own keeps it apart from the EROFS UUID containerd derives.
func verityUUID(diffID digest.Digest) uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("dm-verity:blobs/"+diffID))
}

// appendVerity appends the blob's dm-verity superblock and hash tree
// (build/verity) and returns its sidecar and new size.
func appendVerity(blob string, diffID digest.Digest) (erofscache.Sidecar, int64, error) {
	tree, err := buildverity.Append(blob, erofscache.VerityBlockSize, verityUUID(diffID))
	if err != nil {
		return erofscache.Sidecar{}, 0, fmt.Errorf("EROFS image %s: %w", blob, err)
	}
	return erofscache.Sidecar{RootHash: tree.RootHash, HashOffset: tree.HashOffset}, tree.Size, nil
}

// place moves the blob to dst and writes its sidecar next to it, each
// through a temporary file and a rename: the sidecar comes last, so an
// entry with a sidecar is complete.
func place(src, dst string, sc erofscache.Sidecar) error {
	data, err := sc.Encode()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("failed to create cache directory: %w", err)
	}
	if err := os.Chmod(src, 0o644); err != nil {
		return fmt.Errorf("failed to set the mode of %s: %w", src, err)
	}
	if err := os.Rename(src, dst); err != nil {
		return fmt.Errorf("failed to place %s: %w", dst, err)
	}
	side := erofscache.SidecarPath(dst)
	tmp := side + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, side); err != nil {
		return fmt.Errorf("failed to place %s: %w", side, err)
	}
	return nil
}
