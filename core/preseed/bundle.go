package preseed

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"
	"strings"
	"syscall"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// OpenBundle opens a bundle file for reading. It refuses anything but a
// regular file (after following symlinks); O_NONBLOCK keeps a FIFO named
// like a bundle from blocking the open forever, and has no effect on a
// regular file.
func OpenBundle(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("failed to open: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("failed to stat: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("not a regular file (mode %s)", st.Mode().Type())
	}
	return f, nil
}

// counter counts the bytes read from a bundle file and, when hash is set,
// hashes them as they go by: the whole-file digest costs no second read.
type counter struct {
	r    io.Reader
	n    int64
	hash hash.Hash
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.hash != nil {
		c.hash.Write(p[:n])
	}
	return n, err
}

// seekCounter is a counter over a seekable file: tar.Reader then seeks over
// the entries it skips instead of reading them.
type seekCounter struct {
	counter
	s io.Seeker
}

func (c *seekCounter) Seek(off int64, whence int) (int64, error) { return c.s.Seek(off, whence) }

// stream is an open, decompressed bundle.
type stream struct {
	file   io.ReadCloser
	count  *counter
	tar    *tar.Reader
	closer func()
}

func (s *stream) Close() {
	if s.closer != nil {
		s.closer()
	}
	s.file.Close()
}

// openStream opens a bundle. With hashed, every byte of the file is read
// (no seeking over entries) and hashed into s.count.hash; finish then
// reads what the tar and decompressor left and returns the digest.
func openStream(open func(string) (io.ReadCloser, error), path string, kind bundleformat.Compression, hashed bool) (*stream, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	s := &stream{file: f}
	var r io.Reader
	if sk, ok := f.(io.Seeker); ok && kind == bundleformat.None && !hashed {
		sc := &seekCounter{counter: counter{r: f}, s: sk}
		s.count, r = &sc.counter, sc
	} else {
		s.count = &counter{r: f}
		r = s.count
	}
	if hashed {
		// Before the decompressor is made: gzip reads its header (and
		// fills a buffer) at once.
		s.count.hash = sha256.New()
	}
	switch kind {
	case bundleformat.Gzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("not gzip: %w", err)
		}
		s.closer = func() { zr.Close() }
		r = zr
	case bundleformat.Zstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("failed to start zstd: %w", err)
		}
		s.closer = zr.Close
		r = zr
	}
	s.tar = tar.NewReader(r)
	return s, nil
}

// size is the size of the open bundle file, from the file itself when it
// can say (so it is the file being read, even if the path was replaced
// since), else from its path.
func (s *stream) size(path string) (int64, error) {
	if st, ok := s.file.(interface{ Stat() (os.FileInfo, error) }); ok {
		fi, err := st.Stat()
		if err != nil {
			return 0, fmt.Errorf("failed to stat: %w", err)
		}
		return fi.Size(), nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("failed to stat: %w", err)
	}
	return fi.Size(), nil
}

// sum stops the decompressor, reads the rest of the file (the tar's end
// and any padding, which the tar reader does not read) through the hash
// and returns the hex sha256 of the whole file. The stream must have been
// opened hashed.
func (s *stream) sum() (string, error) {
	if s.closer != nil {
		// The decompressor reads no more of the file once closed, so what
		// follows is the file's remaining bytes, in order.
		s.closer()
		s.closer = nil
	}
	if _, err := io.Copy(io.Discard, s.count); err != nil {
		return "", fmt.Errorf("failed to read the end of the file: %w", err)
	}
	return hex.EncodeToString(s.count.hash.Sum(nil)), nil
}

// imageRef is one image a bundle names.
type imageRef struct {
	Name string
	// Target is the index.json descriptor the image record points to.
	Target ocispec.Descriptor
	// Held are the platforms a narrowed index holds (see
	// bundleformat.AnnotationPlatforms); nil when it holds every one.
	Held []string
	// Manifest is the manifest of the platform that is unpacked.
	Manifest ocispec.Descriptor
	// ChainID names the snapshot the image unpacks to.
	ChainID digest.Digest
	// Names are the records preseed keeps for the image, Name first (see
	// namesOf); empty when the metadata did not say which manifest is
	// unpacked.
	Names []imageName
}

// imageName is one image record: a name and the descriptor it points to.
type imageName struct {
	Name   string
	Target ocispec.Descriptor
}

// names lists the image's record names, or only its name when they are
// unknown.
func (im imageRef) names() []string {
	if len(im.Names) == 0 {
		return []string{im.Name}
	}
	out := make([]string, 0, len(im.Names))
	for _, n := range im.Names {
		out = append(out, n.Name)
	}
	return out
}

// namesOf pairs the names bundleformat.References gives an image with
// what each record points to: repo@<unpacked manifest> of an index points
// to that manifest's descriptor (with its platform), so that the CRI
// resolves it without choosing a platform; the others point to the
// index.json target.
func namesOf(im imageRef) ([]imageName, error) {
	var manifests []digest.Digest
	if im.Manifest.Digest != im.Target.Digest {
		manifests = append(manifests, im.Manifest.Digest)
	}
	refs, err := bundleformat.References(im.Name, im.Target.Digest, manifests...)
	if err != nil {
		return nil, err
	}
	out := make([]imageName, 0, len(refs))
	for _, r := range refs {
		n := imageName{Name: r, Target: im.Target}
		if c, err := reference.ParseNamed(r); err == nil && r != im.Name {
			if d, ok := c.(reference.Digested); ok && len(manifests) > 0 && d.Digest() == im.Manifest.Digest {
				n.Target = im.Manifest
			}
		}
		out = append(out, n)
	}
	return out, nil
}

// metadata is the format's metadata of a bundle (index.json, the JSON
// blobs, the layer descriptors and their owners) seen as preseed needs it:
// one unpacked manifest per image.
type metadata struct {
	*bundleformat.Metadata
	images []imageRef
	// read is how many bytes of the file were read to learn this.
	read int64
}

// readMetadata reads a bundle up to the last JSON blob its images need and
// stops there, before the layers, with the format's reader: it follows
// this machine's platform and wants full image names.
func readMetadata(ctx context.Context, s *stream, platform platforms.MatchComparer) (*metadata, error) {
	policy := bundleformat.Policy{Platform: platform, CheckName: checkName}
	bm, err := bundleformat.ReadMetadata(ctx, s.tar, policy)
	if bm == nil {
		return nil, err
	}
	// With an error, bm still names the images (for the status).
	m := &metadata{Metadata: bm, read: s.count.n}
	for _, im := range bm.Images {
		ref := imageRef{Name: im.Name, Target: im.Target, Held: im.Platforms}
		// The platform policy follows exactly one manifest per image: the
		// best match among those the bundle holds.
		if len(im.Manifests) == 1 {
			ref.Manifest, ref.ChainID = im.Manifests[0].Descriptor, im.Manifests[0].ChainID
			names, nerr := namesOf(ref)
			if nerr != nil && err == nil {
				err = fmt.Errorf("image %s: %w", im.Name, nerr)
			}
			ref.Names = names
		}
		m.images = append(m.images, ref)
	}
	return m, err
}

// checkName accepts only a full, normalised reference: a bare tag would
// become an image literally named like the tag.
func checkName(name string) error {
	_, err := reference.ParseNamed(name)
	return err
}

// ingest reads the whole bundle again and writes the blobs its images need
// into the content store, verified against their digests by containerd on
// commit. Blobs the store already has are skipped without being read when
// the file is seekable and not being hashed against a preseed manifest.
//
// This is a hand-written walk over the tar instead of containerd's
// archive.ImportIndex (which client.Import calls) because ImportIndex
// ingests every regular entry under the digest of whatever bytes it holds,
// ignores symlinks and cleans "../" names silently, cannot skip a blob the
// store already has (it re-streams shared layers), and hashes every byte on
// the client a second time. Image records, GC labels and unpacking still go
// through containerd's images, content and client packages.
func ingest(ctx context.Context, s *stream, cs content.Store, m *metadata) error {
	if err := ingestJSON(ctx, cs, m); err != nil {
		return err
	}
	have := make(map[digest.Digest]bool)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := bundleformat.Next(s.tar)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := ingestEntry(ctx, s.tar, hdr, cs, m, have); err != nil {
			return err
		}
	}
	return checkStored(ctx, cs, m, have)
}

// ingestJSON writes the JSON blobs, already in memory, each with its GC
// labels (see gcLabels).
func ingestJSON(ctx context.Context, cs content.Store, m *metadata) error {
	labels, err := gcLabels(ctx, m)
	if err != nil {
		return err
	}
	for d, b := range m.JSON {
		desc := ocispec.Descriptor{Digest: d, Size: int64(len(b))}
		if err := writeJSON(ctx, cs, desc, b, labels[d]); err != nil {
			return fmt.Errorf("failed to write blob %s (%s): %w", d, m.Owner[d], err)
		}
	}
	return nil
}

// ingestEntry handles one entry of the second pass: index.json must not
// have changed since the first; a layer the images need and not yet
// written goes to the store (and into have); anything else is skipped.
func ingestEntry(ctx context.Context, tr *tar.Reader, hdr *tar.Header, cs content.Store, m *metadata, have map[digest.Digest]bool) error {
	if hdr.Name == bundleformat.IndexEntry {
		b, err := bundleformat.ReadSmall(tr, hdr, bundleformat.MaxJSONBlob)
		if err != nil {
			return err
		}
		if !bytes.Equal(b, m.Index) {
			return errors.New("index.json changed while the bundle was being imported")
		}
		return nil
	}
	d, ok := bundleformat.BlobDigest(hdr.Name)
	if !ok {
		return nil
	}
	desc, ok := m.Layers[d]
	if !ok || have[d] {
		return nil
	}
	if hdr.Size != desc.Size {
		return fmt.Errorf("blob %s (%s) is %d bytes, its descriptor says %d", d, m.Owner[d], hdr.Size, desc.Size)
	}
	ref := "preseed-" + d.String()
	if err := content.WriteBlob(ctx, cs, ref, tr, desc); err != nil {
		// A failed ingest must not be resumed from its bad bytes later.
		if aerr := cs.Abort(context.WithoutCancel(ctx), ref); aerr != nil && !errdefs.IsNotFound(aerr) {
			err = fmt.Errorf("%w (and failed to abort the ingest: %v)", err, aerr)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("broken tar: blob %s (%s) is truncated: %w", d, m.Owner[d], err)
		}
		return fmt.Errorf("failed to write blob %s (%s): %w", d, m.Owner[d], err)
	}
	have[d] = true
	return nil
}

// checkStored checks the layers the bundle did not hold: fine if the store
// already has them, at the size their descriptor says.
func checkStored(ctx context.Context, cs content.Store, m *metadata, have map[digest.Digest]bool) error {
	var missing []string
	for d, desc := range m.Layers {
		if have[d] {
			continue
		}
		info, err := cs.Info(ctx, d)
		if errdefs.IsNotFound(err) {
			missing = append(missing, fmt.Sprintf("%s (%s)", d, m.Owner[d]))
			continue
		}
		if err != nil {
			return fmt.Errorf("failed to look up blob %s: %w", d, err)
		}
		if info.Size != desc.Size {
			return fmt.Errorf("blob %s (%s) is %d bytes in the store, its descriptor says %d", d, m.Owner[d], info.Size, desc.Size)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("missing blob: %s", strings.Join(missing, ", "))
	}
	return nil
}
