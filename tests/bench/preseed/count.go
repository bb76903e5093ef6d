package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// countingReader counts the bytes read through it into n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// countingFile is a bundle file that counts the bytes read into n and
// still seeks (preseed seeks over blobs it skips instead of reading them).
// It offers nothing else: io.Copy must not bypass Read with WriteTo.
type countingFile struct {
	f *os.File
	n *atomic.Int64
}

func (c *countingFile) Read(p []byte) (int, error) {
	k, err := c.f.Read(p)
	c.n.Add(int64(k))
	return k, err
}

func (c *countingFile) Seek(off int64, whence int) (int64, error) { return c.f.Seek(off, whence) }
func (c *countingFile) Close() error                              { return c.f.Close() }

// rchar is the "rchar" of /proc/<pid>/io: the bytes a process (with its
// reaped children, for "self") passed through read syscalls.
func rchar(pid string) (int64, error) {
	p := filepath.Join("/proc", pid, "io")
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("failed to read %s: %w", p, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "rchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: bad rchar %q: %w", p, v, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s: no rchar line", p)
}

// probe holds the rchar of the bench and of containerd at the start of an
// import.
type probe struct {
	daemonPID     string
	self, daemon0 int64
}

func startProbe(daemonPID uint64) (*probe, error) {
	p := &probe{daemonPID: strconv.FormatUint(daemonPID, 10)}
	var err error
	if p.self, err = rchar("self"); err != nil {
		return nil, err
	}
	if p.daemon0, err = rchar(p.daemonPID); err != nil {
		return nil, err
	}
	return p, nil
}

// end gives the reads since start, with bundle the bytes counted through
// the bench's own readers.
func (p *probe) end(bundle int64) (reads, error) {
	self, err := rchar("self")
	if err != nil {
		return reads{}, err
	}
	daemon, err := rchar(p.daemonPID)
	if err != nil {
		return reads{}, err
	}
	return reads{bundle: bundle, importer: self - p.self, daemon: daemon - p.daemon0}, nil
}

// inode identifies a file, so a hard link is counted once.
type inode struct{ dev, ino uint64 }

// allocated sums the allocated bytes (st_blocks × 512) of everything under
// dir, not following symlinks (the erofs snapshotter links cache entries),
// each inode once across calls sharing seen. A missing dir is 0.
func allocated(dir string, seen map[inode]bool) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat data", p)
		}
		k := inode{dev: uint64(st.Dev), ino: st.Ino}
		if !seen[k] {
			seen[k] = true
			total += st.Blocks * 512
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("failed to measure %s: %w", dir, err)
	}
	return total, nil
}
