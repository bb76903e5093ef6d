// Command mkinitramfs writes the appliance's initramfs: a deterministic cpio
// archive in the kernel's "newc" format, compressed with zstd or gzip, from a
// JSON spec of files, tar archives to merge, directories, symlinks and device
// nodes. With -format tar it writes the same tree as a tar instead, which
// build/appliance's mksystem turns into the system image. Every entry has uid/gid 0 and mtime 0, entries are sorted by path
// and inode numbers follow that order, so the same inputs give the same bytes.
//
// The newc writer is written here rather than taken from a library: the small
// cpio libraries cannot write device nodes (the kernel needs /dev/console in
// the initramfs to give init a console), and u-root's would bring its whole
// module graph into go.mod. It must not read anything but the spec's inputs.
package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Spec is the build's description of the archive (written by the initramfs
// Starlark rule).
type Spec struct {
	// Files copied from the build: archive path -> source file and mode.
	Files []File `json:"files"`
	// Tars whose entries are merged into the archive (paths relative to /).
	Tars []string `json:"tars"`
	// Dirs created empty (mode 0755) besides the parents of every entry.
	Dirs []string `json:"dirs"`
	// Symlinks: archive path -> target.
	Symlinks map[string]string `json:"symlinks"`
	// Devices: character or block nodes.
	Devices []Device `json:"devices"`
}

// File is one file from the build.
type File struct {
	Path string `json:"path"`
	Src  string `json:"src"`
	Mode uint32 `json:"mode"`
}

// Device is a device node.
type Device struct {
	Path  string `json:"path"`
	Type  string `json:"type"` // "c" or "b"
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
	Mode  uint32 `json:"mode"`
}

// Mode type bits of cpio (the same as Linux's st_mode).
const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeChar    = 0o020000
	modeBlock   = 0o060000
)

// isDir compares the whole type field: a block device (060000) has the
// directory bit (040000) set too.
func isDir(mode uint32) bool { return mode&0o170000 == modeDir }

// entry is one archive member.
type entry struct {
	mode         uint32 // type and permission bits
	src          string // file to stream the content from, or
	data         []byte // the content itself
	rmaj, rmin   uint32
	origin       string // where it came from, for conflict errors
	size         int64
	isDefaultDir bool
}

// Limits of the kernel's unpacker (init/initramfs.c) and of newc: a name,
// with its NUL, and a symlink target, with the NUL symlink(2) adds, fit in
// PATH_MAX; a name's components in NAME_MAX; sizes are 8 hex digits.
const (
	maxNameLen    = 4095
	maxSegmentLen = 255
	maxTargetLen  = 4095
	maxSize       = 0xFFFFFFFF
)

// symlinkEntry is a symlink to target, or an error if the kernel could not
// create it: an empty target, a NUL (the kernel reads C strings), or one
// longer than PATH_MAX.
func symlinkEntry(target, origin string) (*entry, error) {
	switch {
	case target == "":
		return nil, fmt.Errorf("%s: the symlink target is empty", origin)
	case strings.IndexByte(target, 0) >= 0:
		return nil, fmt.Errorf("%s: the symlink target %q holds a NUL byte", origin, target)
	case len(target) > maxTargetLen:
		return nil, fmt.Errorf("%s: the symlink target is %d bytes long, more than %d", origin, len(target), maxTargetLen)
	}
	return &entry{mode: modeSymlink | 0o777, data: []byte(target), size: int64(len(target)), origin: origin}, nil
}

type archive struct {
	entries map[string]*entry
}

// clean returns p's archive name (no leading slash), or an error if p is
// not written in its clean form or the kernel could not unpack the name.
func clean(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("path %q holds a NUL byte, where the kernel would end it", p)
	}
	c := strings.TrimPrefix(path.Clean("/"+p), "/")
	if c == "" || c == "." {
		return "", fmt.Errorf("path %q names the archive root", p)
	}
	if c != strings.TrimPrefix(p, "/") && c+"/" != strings.TrimPrefix(p, "/") {
		return "", fmt.Errorf("path %q is not clean (want %q)", p, "/"+c)
	}
	if len(c) > maxNameLen {
		return "", fmt.Errorf("path %.40q... is %d bytes long, more than %d", p, len(c), maxNameLen)
	}
	for _, seg := range strings.Split(c, "/") {
		if len(seg) > maxSegmentLen {
			return "", fmt.Errorf("path %.40q... has a component of %d bytes, more than %d", p, len(seg), maxSegmentLen)
		}
	}
	return c, nil
}

func (a *archive) add(p string, e *entry) error {
	c, err := clean(p)
	if err != nil {
		return fmt.Errorf("%s: %w", e.origin, err)
	}
	if err := a.parents(c, e.origin); err != nil {
		return err
	}
	if prev, ok := a.entries[c]; ok {
		if isDir(prev.mode) && isDir(e.mode) {
			if !e.isDefaultDir {
				prev.mode, prev.isDefaultDir = e.mode, false
			}
			return nil
		}
		return fmt.Errorf("/%s is given twice: by %s and by %s", c, prev.origin, e.origin)
	}
	a.entries[c] = e
	return nil
}

func (a *archive) parents(c, origin string) error {
	for d := path.Dir(c); d != "."; d = path.Dir(d) {
		prev, ok := a.entries[d]
		if !ok {
			a.entries[d] = &entry{mode: modeDir | 0o755, origin: origin, isDefaultDir: true}
			continue
		}
		if !isDir(prev.mode) {
			return fmt.Errorf("%s puts a file below /%s, which %s made a non-directory", origin, d, prev.origin)
		}
	}
	return nil
}

func (a *archive) addTar(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("failed to open tar %s: %w", file, err)
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("failed to read tar %s: %w", file, err)
		}
		origin := fmt.Sprintf("tar %s (entry %q)", file, h.Name)
		perm := uint32(h.Mode) & 0o7777
		var e *entry
		switch h.Typeflag {
		case tar.TypeDir:
			e = &entry{mode: modeDir | perm, origin: origin}
		case tar.TypeReg:
			if h.Size > maxSize {
				return fmt.Errorf("%s: %d bytes, more than newc's %d", origin, h.Size, int64(maxSize))
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				return fmt.Errorf("failed to read %s: %w", origin, err)
			}
			e = &entry{mode: modeFile | perm, data: data, size: int64(len(data)), origin: origin}
		case tar.TypeSymlink:
			if e, err = symlinkEntry(h.Linkname, origin); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unsupported tar entry type %q", origin, h.Typeflag)
		}
		if err := a.add(h.Name, e); err != nil {
			return err
		}
	}
}

func load(spec *Spec) (*archive, error) {
	a := &archive{entries: make(map[string]*entry)}
	for _, d := range spec.Dirs {
		if err := a.add(d, &entry{mode: modeDir | 0o755, origin: fmt.Sprintf("dirs entry %q", d), isDefaultDir: true}); err != nil {
			return nil, err
		}
	}
	for _, f := range spec.Files {
		st, err := os.Stat(f.Src)
		if err != nil {
			return nil, fmt.Errorf("failed to read %s for %s: %w", f.Src, f.Path, err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%s (for %s) is not a regular file", f.Src, f.Path)
		}
		if st.Size() > maxSize {
			return nil, fmt.Errorf("%s (for %s) has %d bytes, more than newc's %d", f.Src, f.Path, st.Size(), int64(maxSize))
		}
		e := &entry{mode: modeFile | f.Mode&0o7777, src: f.Src, size: st.Size(), origin: fmt.Sprintf("file %q (from %s)", f.Path, f.Src)}
		if err := a.add(f.Path, e); err != nil {
			return nil, err
		}
	}
	for _, t := range spec.Tars {
		if err := a.addTar(t); err != nil {
			return nil, err
		}
	}
	links := make([]string, 0, len(spec.Symlinks))
	for p := range spec.Symlinks {
		links = append(links, p)
	}
	sort.Strings(links)
	for _, p := range links {
		e, err := symlinkEntry(spec.Symlinks[p], fmt.Sprintf("symlink %q", p))
		if err != nil {
			return nil, err
		}
		if err := a.add(p, e); err != nil {
			return nil, err
		}
	}
	for _, d := range spec.Devices {
		var typ uint32
		switch d.Type {
		case "c":
			typ = modeChar
		case "b":
			typ = modeBlock
		default:
			return nil, fmt.Errorf("device %q: type %q is neither c nor b", d.Path, d.Type)
		}
		e := &entry{mode: typ | d.Mode&0o7777, rmaj: d.Major, rmin: d.Minor, origin: fmt.Sprintf("device %q", d.Path)}
		if err := a.add(d.Path, e); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// newcWriter writes cpio "newc" (070701) records.
type newcWriter struct {
	w   io.Writer
	n   int64 // bytes written, for padding
	ino uint32
}

func (w *newcWriter) write(b []byte) error {
	n, err := w.w.Write(b)
	w.n += int64(n)
	return err
}

func (w *newcWriter) pad() error {
	if r := w.n % 4; r != 0 {
		return w.write(make([]byte, 4-r))
	}
	return nil
}

func (w *newcWriter) header(name string, mode uint32, nlink uint32, size int64, rmaj, rmin uint32) error {
	w.ino++
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, len(name)+1, 0)
	if err := w.write([]byte(hdr)); err != nil {
		return err
	}
	if err := w.write(append([]byte(name), 0)); err != nil {
		return err
	}
	return w.pad()
}

func (w *newcWriter) entry(name string, e *entry) error {
	nlink := uint32(1)
	if isDir(e.mode) {
		nlink = 2
	}
	if err := w.header(name, e.mode, nlink, e.size, e.rmaj, e.rmin); err != nil {
		return err
	}
	switch {
	case e.src != "":
		f, err := os.Open(e.src)
		if err != nil {
			return fmt.Errorf("failed to open %s: %w", e.src, err)
		}
		n, err := io.Copy(writerFunc(w.write), f)
		f.Close()
		if err != nil {
			return fmt.Errorf("failed to copy %s: %w", e.src, err)
		}
		if n != e.size {
			return fmt.Errorf("%s changed size while being archived", e.src)
		}
	case len(e.data) > 0:
		if err := w.write(e.data); err != nil {
			return err
		}
	}
	return w.pad()
}

type writerFunc func([]byte) error

func (f writerFunc) Write(b []byte) (int, error) {
	if err := f(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (a *archive) write(out io.Writer) error {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	w := &newcWriter{w: out}
	for _, n := range names {
		if err := w.entry(n, a.entries[n]); err != nil {
			return fmt.Errorf("failed to write /%s: %w", n, err)
		}
	}
	w.ino = 0
	return w.header("TRAILER!!!", 0, 1, 0, 0, 0)
}

func compressor(kind string, w io.Writer) (io.WriteCloser, error) {
	switch kind {
	case "zstd":
		// One goroutine: the output must not depend on scheduling.
		return zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	case "gzip":
		return gzip.NewWriterLevel(w, gzip.BestCompression)
	case "none":
		return nopCloser{w}, nil
	}
	return nil, fmt.Errorf("unknown compression %q (want zstd, gzip or none)", kind)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// writeTar writes the archive as a tar with the same entries, modes and
// order, uid/gid 0 and mtime 0.
func (a *archive) writeTar(out io.Writer) error {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tar.NewWriter(out)
	for _, n := range names {
		if err := tarEntry(tw, n, a.entries[n]); err != nil {
			return fmt.Errorf("failed to write /%s: %w", n, err)
		}
	}
	return tw.Close()
}

func tarEntry(tw *tar.Writer, name string, e *entry) error {
	h := &tar.Header{Name: name, Mode: int64(e.mode & 0o7777), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
	switch e.mode & 0o170000 {
	case modeDir:
		h.Typeflag, h.Name = tar.TypeDir, name+"/"
	case modeFile:
		h.Typeflag, h.Size = tar.TypeReg, e.size
	case modeSymlink:
		h.Typeflag, h.Linkname = tar.TypeSymlink, string(e.data)
	case modeChar, modeBlock:
		h.Typeflag = tar.TypeChar
		if e.mode&0o170000 == modeBlock {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = int64(e.rmaj), int64(e.rmin)
	default:
		return fmt.Errorf("mode %o has no tar type", e.mode)
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if h.Typeflag != tar.TypeReg {
		return nil
	}
	if e.src == "" {
		_, err := tw.Write(e.data)
		return err
	}
	f, err := os.Open(e.src)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", e.src, err)
	}
	defer f.Close()
	if n, err := io.Copy(tw, f); err != nil || n != e.size {
		return fmt.Errorf("failed to copy %s (%d of %d bytes): %v", e.src, n, e.size, err)
	}
	return nil
}

func run(specPath, outPath, compression, format string) error {
	raw, err := os.ReadFile(specPath)
	if err != nil {
		return fmt.Errorf("failed to read spec %s: %w", specPath, err)
	}
	var spec Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return fmt.Errorf("spec %s is not valid: %w", specPath, err)
	}
	a, err := load(&spec)
	if err != nil {
		return fmt.Errorf("spec %s: %w", specPath, err)
	}
	f, err := os.Create(outPath)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", outPath, err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	cw, err := compressor(compression, bw)
	if err != nil {
		f.Close()
		return err
	}
	write := a.write
	switch format {
	case "tar":
		write = a.writeTar
	case "cpio":
	default:
		f.Close()
		return fmt.Errorf("unknown format %q (want cpio or tar)", format)
	}
	if err := write(cw); err != nil {
		f.Close()
		return fmt.Errorf("failed to write %s: %w", outPath, err)
	}
	if err := errors.Join(cw.Close(), bw.Flush(), f.Close()); err != nil {
		return fmt.Errorf("failed to finish %s: %w", outPath, err)
	}
	return nil
}

func main() {
	spec := flag.String("spec", "", "JSON spec of the archive")
	out := flag.String("out", "", "the initramfs to write")
	compression := flag.String("compression", "zstd", "zstd, gzip or none")
	format := flag.String("format", "cpio", "cpio (an initramfs) or tar")
	flag.Parse()
	if *spec == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: mkinitramfs -spec SPEC.json -out FILE [-compression zstd|gzip|none] [-format cpio|tar]")
		os.Exit(2)
	}
	if err := run(*spec, *out, *compression, *format); err != nil {
		fmt.Fprintln(os.Stderr, "mkinitramfs:", err)
		os.Exit(1)
	}
}
