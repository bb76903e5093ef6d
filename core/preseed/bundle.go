package preseed

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"
	"strings"
	"syscall"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	// maxJSONBlob bounds index.json, manifests and configs held in memory.
	maxJSONBlob = 4 << 20
	// maxSpare bounds blobs kept while their referrer has not been read yet
	// (JSON blobs are sorted by path, not by reference order).
	maxSpareBlob  = 1 << 20
	maxSpareTotal = 16 << 20
)

// blobDigest returns the digest a blob entry's name carries, if name has the
// only form of blob entry the bundle format allows: blobs/sha256/<64 hex>.
func blobDigest(name string) (digest.Digest, bool) {
	hex, ok := strings.CutPrefix(name, "blobs/sha256/")
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
func openStream(open func(string) (io.ReadCloser, error), path string, kind compression, hashed bool) (*stream, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	s := &stream{file: f}
	var r io.Reader
	if sk, ok := f.(io.Seeker); ok && kind == compressionNone && !hashed {
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
	case compressionGzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("not gzip: %w", err)
		}
		s.closer = func() { zr.Close() }
		r = zr
	case compressionZstd:
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

// next returns the next tar entry after checking it against the bundle
// format: a regular file named oci-layout, index.json or
// blobs/sha256/<hex>, nothing else.
func next(tr *tar.Reader) (*tar.Header, error) {
	hdr, err := tr.Next()
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, fmt.Errorf("broken tar: %w", err)
	}
	name := hdr.Name
	if strings.HasPrefix(name, "/") || name == ".." || strings.HasPrefix(name, "../") ||
		strings.Contains(name, "/../") || strings.HasSuffix(name, "/..") {
		return nil, fmt.Errorf("entry %q escapes the bundle", name)
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old tars still write TypeRegA
	case tar.TypeSymlink:
		return nil, fmt.Errorf("entry %q is a symlink to %q: a bundle holds only regular files", name, hdr.Linkname)
	case tar.TypeLink:
		return nil, fmt.Errorf("entry %q is a hard link to %q: a bundle holds only regular files", name, hdr.Linkname)
	default:
		return nil, fmt.Errorf("entry %q has tar type %q: a bundle holds only regular files", name, hdr.Typeflag)
	}
	_, blob := blobDigest(name)
	if name != ocispec.ImageLayoutFile && name != ocispec.ImageIndexFile && !blob {
		return nil, fmt.Errorf("unexpected entry %q (want oci-layout, index.json or blobs/sha256/<hex>)", name)
	}
	return hdr, nil
}

func readSmall(r io.Reader, hdr *tar.Header, limit int64) ([]byte, error) {
	if hdr.Size > limit {
		return nil, fmt.Errorf("entry %q is %d bytes, more than %d", hdr.Name, hdr.Size, limit)
	}
	b := make([]byte, hdr.Size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("broken tar: failed to read %q: %w", hdr.Name, err)
	}
	return b, nil
}

// imageRef is one image a bundle names.
type imageRef struct {
	Name string
	// Target is the index.json descriptor the image record points to.
	Target ocispec.Descriptor
	// Manifest is the manifest of the platform that is unpacked.
	Manifest ocispec.Descriptor
	// ChainID names the snapshot the image unpacks to.
	ChainID digest.Digest
}

// metadata is what a bundle holds before its layers: enough to know every
// digest and to decide whether it must be imported.
type metadata struct {
	images []imageRef
	// index is the raw index.json, compared again on import.
	index []byte
	// json holds the index, manifest and config blobs the images need.
	json map[digest.Digest][]byte
	// layers are the layer blobs the unpacked manifests need.
	layers map[digest.Digest]ocispec.Descriptor
	// owner names, for each needed blob, what needs it (for errors).
	owner map[digest.Digest]string
	// read is how many bytes of the file were read to learn this.
	read int64
}

// role is what a pending JSON blob is.
type role struct {
	desc  ocispec.Descriptor
	owner string
}

// readMetadata reads a bundle up to the last JSON blob its images need and
// stops there, before the layers (the format puts them last).
func readMetadata(ctx context.Context, s *stream, platform platforms.MatchComparer) (*metadata, error) {
	tr := s.tar
	m := &metadata{
		json:   make(map[digest.Digest][]byte),
		layers: make(map[digest.Digest]ocispec.Descriptor),
		owner:  make(map[digest.Digest]string),
	}

	hdr, err := next(tr)
	if err == io.EOF {
		return nil, errors.New("empty bundle: no tar entries")
	}
	if err != nil {
		return nil, err
	}
	if hdr.Name != ocispec.ImageLayoutFile {
		return nil, fmt.Errorf("first entry is %q, want %s", hdr.Name, ocispec.ImageLayoutFile)
	}
	b, err := readSmall(tr, hdr, 4096)
	if err != nil {
		return nil, err
	}
	var layout ocispec.ImageLayout
	if err := json.Unmarshal(b, &layout); err != nil || layout.Version != ocispec.ImageLayoutVersion {
		return nil, fmt.Errorf("%s is %q, want imageLayoutVersion %s", ocispec.ImageLayoutFile, b, ocispec.ImageLayoutVersion)
	}

	hdr, err = next(tr)
	if err == io.EOF {
		return nil, errors.New("missing index.json: the bundle ends after oci-layout")
	}
	if err != nil {
		return nil, err
	}
	if hdr.Name != ocispec.ImageIndexFile {
		return nil, fmt.Errorf("missing index.json: second entry is %q", hdr.Name)
	}
	if m.index, err = readSmall(tr, hdr, maxJSONBlob); err != nil {
		return nil, err
	}
	var index ocispec.Index
	if err := json.Unmarshal(m.index, &index); err != nil {
		return nil, fmt.Errorf("index.json is not an OCI index: %w", err)
	}
	if len(index.Manifests) == 0 {
		return nil, errors.New("index.json names no images")
	}

	pending := make(map[digest.Digest]role)
	seen := make(map[string]bool)
	for i, d := range index.Manifests {
		name := d.Annotations[images.AnnotationImageName]
		if name == "" {
			name = d.Annotations[ocispec.AnnotationRefName]
		}
		if name == "" {
			return nil, fmt.Errorf("index.json entry %d (%s) has no image name: want annotation %s", i, d.Digest, images.AnnotationImageName)
		}
		// Only a full, normalised reference: a bare tag would become an
		// image literally named like the tag.
		if _, err := reference.ParseNamed(name); err != nil {
			return nil, fmt.Errorf("index.json entry %d: image name %q is not a full reference: %w", i, name, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("index.json names image %q twice", name)
		}
		seen[name] = true
		if err := d.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("index.json entry %d (%s): %w", i, name, err)
		}
		if d.Platform != nil && !platform.Match(*d.Platform) {
			return nil, fmt.Errorf("image %s is for %s, not this machine's platform", name, platforms.Format(*d.Platform))
		}
		m.images = append(m.images, imageRef{Name: name, Target: d})
		pending[d.Digest] = role{desc: d, owner: "image " + name}
	}

	spare := make(map[digest.Digest][]byte)
	var spareTotal int64
	// resolve records a JSON blob and makes its children pending.
	var resolve func(d digest.Digest, b []byte) error
	resolve = func(d digest.Digest, b []byte) error {
		r := pending[d]
		delete(pending, d)
		if int64(len(b)) != r.desc.Size {
			return fmt.Errorf("blob %s (%s) is %d bytes, its descriptor says %d", d, r.owner, len(b), r.desc.Size)
		}
		if digest.FromBytes(b) != d {
			return fmt.Errorf("blob %s (%s) does not match its digest", d, r.owner)
		}
		m.json[d] = b
		m.owner[d] = r.owner
		var children []role
		switch r.desc.MediaType {
		case ocispec.MediaTypeImageIndex, images.MediaTypeDockerSchema2ManifestList:
			var idx ocispec.Index
			if err := json.Unmarshal(b, &idx); err != nil {
				return fmt.Errorf("blob %s (%s) is not an index: %w", d, r.owner, err)
			}
			var best *ocispec.Descriptor
			for i, c := range idx.Manifests {
				if c.Platform == nil || !platform.Match(*c.Platform) || !images.IsManifestType(c.MediaType) {
					continue
				}
				if best == nil || platform.Less(*c.Platform, *best.Platform) {
					best = &idx.Manifests[i]
				}
			}
			if best == nil {
				return fmt.Errorf("index %s (%s) has no manifest for this machine's platform", d, r.owner)
			}
			children = append(children, role{desc: *best, owner: "manifest of " + r.owner})
		case ocispec.MediaTypeImageManifest, images.MediaTypeDockerSchema2Manifest:
			var mf ocispec.Manifest
			if err := json.Unmarshal(b, &mf); err != nil {
				return fmt.Errorf("blob %s (%s) is not a manifest: %w", d, r.owner, err)
			}
			if err := mf.Config.Digest.Validate(); err != nil {
				return fmt.Errorf("manifest %s (%s): config: %w", d, r.owner, err)
			}
			children = append(children, role{desc: mf.Config, owner: "config of " + r.owner})
			for _, l := range mf.Layers {
				if err := l.Digest.Validate(); err != nil {
					return fmt.Errorf("manifest %s (%s): layer: %w", d, r.owner, err)
				}
				m.layers[l.Digest] = l
				if _, ok := m.owner[l.Digest]; !ok {
					m.owner[l.Digest] = "layer of " + r.owner
				}
			}
		case ocispec.MediaTypeImageConfig, images.MediaTypeDockerSchema2Config:
			// A leaf; checked in finish.
		default:
			return fmt.Errorf("blob %s (%s) has unsupported media type %q", d, r.owner, r.desc.MediaType)
		}
		for _, c := range children {
			if _, done := m.json[c.desc.Digest]; done {
				continue
			}
			pending[c.desc.Digest] = c
			if sb, ok := spare[c.desc.Digest]; ok {
				delete(spare, c.desc.Digest)
				if err := resolve(c.desc.Digest, sb); err != nil {
					return err
				}
			}
		}
		return nil
	}

	for len(pending) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := next(tr)
		if err == io.EOF {
			var missing []string
			for d, r := range pending {
				missing = append(missing, fmt.Sprintf("%s (%s)", d, r.owner))
			}
			sort.Strings(missing)
			return nil, fmt.Errorf("missing blob: %s", strings.Join(missing, ", "))
		}
		if err != nil {
			return nil, err
		}
		d, ok := blobDigest(hdr.Name)
		if !ok {
			return nil, fmt.Errorf("entry %q after index.json: want blobs/sha256/<hex>", hdr.Name)
		}
		if _, ok := pending[d]; ok {
			b, err := readSmall(tr, hdr, maxJSONBlob)
			if err != nil {
				return nil, err
			}
			if err := resolve(d, b); err != nil {
				return nil, err
			}
			continue
		}
		if hdr.Size <= maxSpareBlob && spareTotal+hdr.Size <= maxSpareTotal {
			b, err := readSmall(tr, hdr, maxSpareBlob)
			if err != nil {
				return nil, err
			}
			spare[d] = b
			spareTotal += hdr.Size
		}
	}
	m.read = s.count.n
	return m, m.finish(platform)
}

// finish works out each image's platform manifest and snapshot chain.
func (m *metadata) finish(platform platforms.MatchComparer) error {
	for i := range m.images {
		im := &m.images[i]
		desc := im.Target
		for images.IsIndexType(desc.MediaType) {
			var idx ocispec.Index
			if err := json.Unmarshal(m.json[desc.Digest], &idx); err != nil {
				return err
			}
			var best *ocispec.Descriptor
			for j, c := range idx.Manifests {
				if c.Platform != nil && platform.Match(*c.Platform) && images.IsManifestType(c.MediaType) &&
					(best == nil || platform.Less(*c.Platform, *best.Platform)) {
					best = &idx.Manifests[j]
				}
			}
			desc = *best
		}
		im.Manifest = desc
		var mf ocispec.Manifest
		if err := json.Unmarshal(m.json[desc.Digest], &mf); err != nil {
			return err
		}
		var cfg ocispec.Image
		if err := json.Unmarshal(m.json[mf.Config.Digest], &cfg); err != nil {
			return fmt.Errorf("config %s of image %s is not an image config: %w", mf.Config.Digest, im.Name, err)
		}
		if cfg.OS != "" && !platform.Match(cfg.Platform) {
			return fmt.Errorf("image %s is for %s, not this machine's platform", im.Name, platforms.Format(cfg.Platform))
		}
		var layers int
		for _, l := range mf.Layers {
			if images.IsLayerType(l.MediaType) {
				layers++
			}
		}
		if len(cfg.RootFS.DiffIDs) != layers {
			return fmt.Errorf("image %s: config lists %d diff IDs for %d layers", im.Name, len(cfg.RootFS.DiffIDs), layers)
		}
		im.ChainID = identity.ChainID(cfg.RootFS.DiffIDs)
	}
	return nil
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
	tr := s.tar
	// The JSON blobs are already in memory.
	for d, b := range m.json {
		desc := ocispec.Descriptor{Digest: d, Size: int64(len(b))}
		if err := content.WriteBlob(ctx, cs, "preseed-"+d.String(), bytes.NewReader(b), desc); err != nil {
			return fmt.Errorf("failed to write blob %s (%s): %w", d, m.owner[d], err)
		}
	}
	have := make(map[digest.Digest]bool)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := next(tr)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if hdr.Name == ocispec.ImageIndexFile {
			b, err := readSmall(tr, hdr, maxJSONBlob)
			if err != nil {
				return err
			}
			if !bytes.Equal(b, m.index) {
				return errors.New("index.json changed while the bundle was being imported")
			}
			continue
		}
		d, ok := blobDigest(hdr.Name)
		if !ok {
			continue
		}
		desc, ok := m.layers[d]
		if !ok || have[d] {
			continue
		}
		if hdr.Size != desc.Size {
			return fmt.Errorf("blob %s (%s) is %d bytes, its descriptor says %d", d, m.owner[d], hdr.Size, desc.Size)
		}
		ref := "preseed-" + d.String()
		if err := content.WriteBlob(ctx, cs, ref, tr, desc); err != nil {
			// A failed ingest must not be resumed from its bad bytes later.
			if aerr := cs.Abort(context.WithoutCancel(ctx), ref); aerr != nil && !errdefs.IsNotFound(aerr) {
				err = fmt.Errorf("%w (and failed to abort the ingest: %v)", err, aerr)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("broken tar: blob %s (%s) is truncated: %w", d, m.owner[d], err)
			}
			return fmt.Errorf("failed to write blob %s (%s): %w", d, m.owner[d], err)
		}
		have[d] = true
	}
	// Layers this bundle lacks are fine if the store already has them.
	var missing []string
	for d, desc := range m.layers {
		if have[d] {
			continue
		}
		info, err := cs.Info(ctx, d)
		if errdefs.IsNotFound(err) {
			missing = append(missing, fmt.Sprintf("%s (%s)", d, m.owner[d]))
			continue
		}
		if err != nil {
			return fmt.Errorf("failed to look up blob %s: %w", d, err)
		}
		if info.Size != desc.Size {
			return fmt.Errorf("blob %s (%s) is %d bytes in the store, its descriptor says %d", d, m.owner[d], info.Size, desc.Size)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("missing blob: %s", strings.Join(missing, ", "))
	}
	return nil
}
