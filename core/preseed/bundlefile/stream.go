// Package bundlefile reads one preseed bundle file (docs/bundle-format.md)
// as the preseed runnable needs it: it opens only regular files,
// decompresses them, counts (and, when asked, hashes) every byte read, and
// reads a bundle's metadata with the format's reader into one unpacked
// manifest per image, with the image records preseed keeps for it.
//
// It says what a file holds. It must not decide whether a bundle may be
// imported (core/preseed/check does), write anything, or talk to
// containerd (core/preseed does).
package bundlefile

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"syscall"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// File is one bundle file of the preseed tree.
type File struct {
	// Namespace is the containerd namespace: the file's directory name.
	Namespace string
	// FileName is the file's name in its namespace directory.
	FileName string
	// Path is where the file is.
	Path string
	// Compression is what its name says it is compressed with.
	Compression bundleformat.Compression
}

// Open opens a bundle file for reading. It refuses anything but a regular
// file (after following symlinks); O_NONBLOCK keeps a FIFO named like a
// bundle from blocking the open forever, and has no effect on a regular
// file.
func Open(path string) (*os.File, error) {
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

// Stream is an open, decompressed bundle.
type Stream struct {
	// Tar reads the bundle's entries.
	Tar    *tar.Reader
	path   string
	file   io.ReadCloser
	count  *counter
	closer func()
}

// Close closes the decompressor and the file.
func (s *Stream) Close() {
	if s.closer != nil {
		s.closer()
	}
	s.file.Close()
}

// BytesRead is how many bytes of the file were read so far.
func (s *Stream) BytesRead() int64 { return s.count.n }

// OpenStream opens a bundle with open (Open, or a wrapper of it). With
// hashed, every byte of the file is read (no seeking over entries) and
// hashed; Sum then reads what the tar and decompressor left and returns the
// digest.
func OpenStream(open func(string) (io.ReadCloser, error), f File, hashed bool) (*Stream, error) {
	file, err := open(f.Path)
	if err != nil {
		return nil, err
	}
	s := &Stream{path: f.Path, file: file}
	var r io.Reader
	if sk, ok := file.(io.Seeker); ok && f.Compression == bundleformat.None && !hashed {
		sc := &seekCounter{counter: counter{r: file}, s: sk}
		s.count, r = &sc.counter, sc
	} else {
		s.count = &counter{r: file}
		r = s.count
	}
	if hashed {
		// Before the decompressor is made: gzip reads its header (and
		// fills a buffer) at once.
		s.count.hash = sha256.New()
	}
	switch f.Compression {
	case bundleformat.Gzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			file.Close()
			return nil, fmt.Errorf("not gzip: %w", err)
		}
		s.closer = func() { zr.Close() }
		r = zr
	case bundleformat.Zstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			file.Close()
			return nil, fmt.Errorf("failed to start zstd: %w", err)
		}
		s.closer = zr.Close
		r = zr
	}
	s.Tar = tar.NewReader(r)
	return s, nil
}

// Size is the size of the open bundle file, from the file itself when it
// can say (so it is the file being read, even if the path was replaced
// since), else from its path.
func (s *Stream) Size() (int64, error) {
	if st, ok := s.file.(interface{ Stat() (os.FileInfo, error) }); ok {
		fi, err := st.Stat()
		if err != nil {
			return 0, fmt.Errorf("failed to stat: %w", err)
		}
		return fi.Size(), nil
	}
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0, fmt.Errorf("failed to stat: %w", err)
	}
	return fi.Size(), nil
}

// Sum stops the decompressor, reads the rest of the file (the tar's end
// and any padding, which the tar reader does not read) through the hash
// and returns the hex sha256 of the whole file. The stream must have been
// opened hashed.
func (s *Stream) Sum() (string, error) {
	if s.count.hash == nil {
		return "", fmt.Errorf("the stream was not opened hashed")
	}
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
