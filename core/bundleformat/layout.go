// Package bundleformat is the preseed bundle format of docs/bundle-format.md
// as code: the entry names and rules of a bundle's tar, the annotation keys
// and media types it uses, the compression kinds and their file name
// extensions, the preseed manifest's schema with its strict parser, and the
// reader of a bundle's metadata (everything before its layers). Every writer
// (build/oci/bundle) and reader (core/preseed, build/oci/validate,
// build/release/cmd/mkrelease) uses it, so the format is declared once.
//
// It must not talk to containerd or a registry, and must not compress,
// decompress or do any IO beyond reading a tar stream it is given: callers
// own files and decompressors. It depends only on the standard library,
// image-spec, go-digest and distribution/reference (image names).
package bundleformat

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Entry names and contents of a bundle's tar.
const (
	// LayoutEntry is the first entry; its content is exactly LayoutContent.
	LayoutEntry   = ocispec.ImageLayoutFile
	LayoutContent = `{"imageLayoutVersion":"` + ocispec.ImageLayoutVersion + `"}`
	// IndexEntry is the second entry.
	IndexEntry = ocispec.ImageIndexFile
	// BlobPrefix starts the name of every blob entry: BlobPrefix + 64 hex.
	BlobPrefix = "blobs/sha256/"
	// EntryMode is the mode writers give every entry (and validate wants).
	EntryMode = 0o644
)

// Where bundles and their manifest live in the appliance.
const (
	// PreseedRoot holds the bundles, as PreseedRoot/<namespace>/<name><ext>.
	PreseedRoot = "/containerd/preseed"
	// ManifestPath is where the appliance carries the preseed manifest.
	ManifestPath = "/etc/appliance/preseed.json"
)

// ModTime is the fixed modification time of every entry writers write: the
// same image then gives the same bytes.
func ModTime() time.Time { return time.Unix(0, 0).UTC() }

// Header is the tar header writers give a regular file entry of size bytes.
func Header(name string, size int64) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     EntryMode,
		ModTime:  ModTime(),
		Format:   tar.FormatPAX,
	}
}

// BlobName is the entry name of the blob d (a sha256 digest).
func BlobName(d digest.Digest) string { return BlobPrefix + d.Encoded() }

// BlobDigest returns the digest a blob entry's name carries, if name has the
// only form of blob entry the format allows: blobs/sha256/<64 lower hex>.
func BlobDigest(name string) (digest.Digest, bool) {
	hex, ok := strings.CutPrefix(name, BlobPrefix)
	if !ok || len(hex) != 64 {
		return "", false
	}
	for _, c := range hex {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", false
		}
	}
	return digest.NewDigestFromEncoded(digest.SHA256, hex), true
}

// CheckEntry checks a tar entry against the format's entry rules: a regular
// file named oci-layout, index.json or blobs/sha256/<hex>, nothing else. The
// mode, owner and mtime are writers' duties that only build/oci/validate
// insists on; a reader accepts any.
func CheckEntry(hdr *tar.Header) error {
	name := hdr.Name
	if strings.HasPrefix(name, "/") || name == ".." || strings.HasPrefix(name, "../") ||
		strings.Contains(name, "/../") || strings.HasSuffix(name, "/..") {
		return fmt.Errorf("entry %q escapes the bundle", name)
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old tars still write TypeRegA
	case tar.TypeSymlink:
		return fmt.Errorf("entry %q is a symlink to %q: a bundle holds only regular files", name, hdr.Linkname)
	case tar.TypeLink:
		return fmt.Errorf("entry %q is a hard link to %q: a bundle holds only regular files", name, hdr.Linkname)
	default:
		return fmt.Errorf("entry %q has tar type %q: a bundle holds only regular files", name, hdr.Typeflag)
	}
	if _, blob := BlobDigest(name); name != LayoutEntry && name != IndexEntry && !blob {
		return fmt.Errorf("unexpected entry %q (want %s, %s or %s<hex>)", name, LayoutEntry, IndexEntry, BlobPrefix)
	}
	return nil
}

// Next returns the next entry of tr after CheckEntry; io.EOF at the end.
func Next(tr *tar.Reader) (*tar.Header, error) {
	hdr, err := tr.Next()
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, fmt.Errorf("broken tar: %w", err)
	}
	if err := CheckEntry(hdr); err != nil {
		return nil, err
	}
	return hdr, nil
}

// readChunk is the most ReadSmall allocates ahead of the bytes it has read.
const readChunk = 64 << 10

// ReadSmall reads the current entry of r whole, refusing one over limit
// bytes before reading it. Memory grows with the bytes actually read, not
// with the size the header claims: a short, truncated bundle claiming a
// large entry costs little.
func ReadSmall(r io.Reader, hdr *tar.Header, limit int64) ([]byte, error) {
	if hdr.Size > limit {
		return nil, fmt.Errorf("entry %q is %d bytes, more than %d", hdr.Name, hdr.Size, limit)
	}
	b := make([]byte, 0, min(hdr.Size, readChunk))
	for int64(len(b)) < hdr.Size {
		// Grow geometrically, as far as the bytes read justify.
		next := int(min(hdr.Size, max(2*int64(len(b)), readChunk)))
		b = slices.Grow(b, next-len(b))
		if _, err := io.ReadFull(r, b[len(b):next]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("broken tar: failed to read %q: %w", hdr.Name, err)
		}
		b = b[:next]
	}
	return b, nil
}
