package tarball

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// maxLinkHops bounds link chains, so that a loop is an error, not a hang.
const maxLinkHops = 40

// Magic bytes of the compressions a tarball (or a layer) may have.
const (
	gzipMagic = "\x1f\x8b"
	zstdMagic = "\x28\xb5\x2f\xfd"
)

// file is one regular file of the archive, saved in the scratch directory
// under a number: no archive path is ever used as a host path.
type file struct {
	path   string
	size   int64
	digest digest.Digest
}

// archive is a tarball unpacked into a scratch directory. Links are kept as
// names of other entries and resolved on lookup, never made on disk.
//
// Hand-written rather than go-containerregistry's tarball opener, which
// scans (and so decompresses) the whole tarball again for every file it
// reads and follows links without asking where they point: here the tarball
// is read once, every entry is checked as it comes, and each file's sha256
// is taken on the way, so checking a blob needs no second read.
type archive struct {
	name    string // the tarball as given, for errors
	scratch string
	files   map[string]file
	links   map[string]string // link name → archive path it points at
	dirs    map[string]bool
}

// errRecorder remembers the first error of the decompressor it wraps, so
// that a corrupt stream is told apart from a bad tar inside it.
type errRecorder struct {
	r   io.Reader
	err error
}

func (e *errRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// decompress detects the compression by its magic bytes, not by the name.
func decompress(r io.Reader) (io.Reader, string, func(), error) {
	br := bufio.NewReader(r)
	head, _ := br.Peek(len(zstdMagic))
	switch {
	case bytes.HasPrefix(head, []byte(gzipMagic)):
		gr, err := gzip.NewReader(br)
		if err != nil {
			return nil, "", nil, fmt.Errorf("corrupt gzip compression: %w", err)
		}
		return gr, "gzip", func() { gr.Close() }, nil
	case bytes.HasPrefix(head, []byte(zstdMagic)):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, "", nil, fmt.Errorf("corrupt zstd compression: %w", err)
		}
		return zr, "zstd", zr.Close, nil
	}
	return br, "", func() {}, nil
}

// unpack reads the whole tarball at tarPath into scratch, checking every
// entry's path and type.
func unpack(ctx context.Context, tarPath, scratch string) (*archive, error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return nil, fmt.Errorf("failed to open tarball: %w", err)
	}
	defer f.Close()
	dr, kind, closeFn, err := decompress(f)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	rec := &errRecorder{r: dr}
	a := &archive{name: tarPath, scratch: scratch, files: map[string]file{}, links: map[string]string{}, dirs: map[string]bool{}}
	tr := tar.NewReader(rec)
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if i == 0 && kind == "" {
				return nil, fmt.Errorf("not a tar archive (nor gzip- or zstd-compressed): it holds no tar entry")
			}
			break
		}
		if err != nil {
			// Garbage from a damaged compressed stream shows as a bad
			// tar header first; the stream's own check, at its end,
			// says what is wrong.
			_, _ = io.Copy(io.Discard, rec)
			return nil, readError(kind, rec.err, i, err)
		}
		if err := a.add(tr, hdr, i); err != nil {
			if rec.err != nil {
				return nil, fmt.Errorf("corrupt %s compression: %w", kind, rec.err)
			}
			return nil, err
		}
	}
	// The tar ends before the compressed stream does: read the rest so that
	// a corrupt end (e.g. a wrong gzip checksum) is found too.
	if _, err := io.Copy(io.Discard, rec); err != nil {
		return nil, fmt.Errorf("corrupt %s compression after the tar's end: %w", kind, err)
	}
	return a, nil
}

func readError(kind string, decompErr error, entries int, err error) error {
	switch {
	case decompErr != nil:
		return fmt.Errorf("corrupt %s compression: %w", kind, decompErr)
	case entries == 0 && kind == "":
		return fmt.Errorf("not a tar archive (nor gzip- or zstd-compressed): %w", err)
	case entries == 0:
		return fmt.Errorf("%s-compressed, but not a tar archive inside: %w", kind, err)
	}
	return fmt.Errorf("corrupt tar after %d entries: %w", entries, err)
}

// cleanName checks an entry's (or hard link's) path: relative, no ".."
// component, so that nothing can point outside the archive.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("an entry has an empty name")
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("entry %q has an absolute path, escaping the archive", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("entry %q has a \"..\" component, escaping the archive", name)
		}
	}
	return path.Clean(name), nil
}

func (a *archive) add(tr *tar.Reader, hdr *tar.Header, i int) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if name == "." {
		return nil
	}
	if err := a.checkNew(name, hdr.Typeflag == tar.TypeDir); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		a.dirs[name] = true
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old tars write TypeRegA for files
		return a.save(tr, name, i)
	case tar.TypeSymlink:
		if path.IsAbs(hdr.Linkname) {
			return fmt.Errorf("symlink %q points at the absolute path %q, outside the archive", name, hdr.Linkname)
		}
		target := path.Join(path.Dir(name), hdr.Linkname)
		if target == ".." || strings.HasPrefix(target, "../") {
			return fmt.Errorf("symlink %q points at %q, outside the archive", name, hdr.Linkname)
		}
		a.links[name] = target
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link %q: %w", name, err)
		}
		if _, ok := a.files[target]; !ok {
			if _, ok := a.links[target]; !ok {
				return fmt.Errorf("hard link %q points at %q, which is not an earlier file of the archive", name, hdr.Linkname)
			}
		}
		a.links[name] = target
	default:
		return fmt.Errorf("entry %q has type %q: only files, directories and links belong in an image tarball", name, string(hdr.Typeflag))
	}
	return nil
}

// checkNew refuses a second entry of one name (a later one would silently
// replace what was checked) and an entry below a link or a file.
func (a *archive) checkNew(name string, dir bool) error {
	_, isFile := a.files[name]
	_, isLink := a.links[name]
	if isFile || isLink || (a.dirs[name] && !dir) {
		return fmt.Errorf("entry %q appears twice", name)
	}
	for p := path.Dir(name); p != "."; p = path.Dir(p) {
		if _, ok := a.links[p]; ok {
			return fmt.Errorf("entry %q lies below the link %q: a path through a link could leave the archive", name, p)
		}
		if _, ok := a.files[p]; ok {
			return fmt.Errorf("entry %q lies below the file %q", name, p)
		}
	}
	return nil
}

// save writes a regular file to scratch, hashing it on the way.
func (a *archive) save(r io.Reader, name string, i int) error {
	p := filepath.Join(a.scratch, strconv.Itoa(i))
	out, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("failed to unpack %q: %w", name, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), r)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("failed to unpack %q: %w", name, err)
	}
	a.files[name] = file{path: p, size: n, digest: digest.NewDigest(digest.SHA256, h)}
	return nil
}

// lookup finds the file an archive path names, following links.
// A name from a manifest is checked as an entry's path is.
func (a *archive) lookup(want string) (file, error) {
	name, err := cleanName(want)
	if err != nil {
		return file{}, err
	}
	for range maxLinkHops {
		if f, ok := a.files[name]; ok {
			return f, nil
		}
		target, ok := a.links[name]
		if !ok {
			if name != want {
				return file{}, fmt.Errorf("%q is a link to %q, which is not a file of the archive", want, name)
			}
			return file{}, fmt.Errorf("%q is not in the archive", want)
		}
		name = target
	}
	return file{}, fmt.Errorf("%q: more than %d links in a row (a loop?)", want, maxLinkHops)
}

// has tells whether name is a file, or a link to one.
func (a *archive) has(name string) bool {
	_, err := a.lookup(name)
	return err == nil
}

// exists tells whether an entry (a file or a link) has this name.
func (a *archive) exists(name string) bool {
	_, isFile := a.files[name]
	_, isLink := a.links[name]
	return isFile || isLink
}

// readSmall reads a JSON file of the archive, refusing one over limit.
func (a *archive) readSmall(name string, limit int64) ([]byte, file, error) {
	f, err := a.lookup(name)
	if err != nil {
		return nil, file{}, err
	}
	if f.size > limit {
		return nil, file{}, fmt.Errorf("%q has %d bytes, more than the %d a JSON document here may have", name, f.size, limit)
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, file{}, fmt.Errorf("failed to read %q: %w", name, err)
	}
	return data, f, nil
}
