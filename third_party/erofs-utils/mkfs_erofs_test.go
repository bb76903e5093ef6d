// Package erofsutils tests the mkfs.erofs the appliance ships for containerd's
// EROFS differ: that the files mkfs_erofs.bzl puts in the initramfs are all it
// needs to run, and that it converts a tar layer the way the differ asks. It
// must not run any mkfs.erofs or library but the shipped ones.
package erofsutils

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cavaliergopher/cpio"

	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

const (
	binPath    = "/usr/bin/mkfs.erofs"
	loaderPath = "/lib64/ld-linux-x86-64.so.2"
	libDir     = "/usr/lib/x86_64-linux-gnu"

	// EROFS's superblock: at byte 1024, magic first, the UUID at 48.
	superblockOffset = 1024
	erofsMagic       = 0xE0F5E1E2
	uuidOffset       = 48
)

// unpackRoot extracts the cpio archive of the shipped files into a new
// directory and returns it. Device nodes (the initramfs's /dev/console) are
// left out: they need privileges and mkfs.erofs does not use them.
func unpackRoot(t *testing.T) string {
	t.Helper()
	archive := runfile.Path(t, "MKFS_EROFS_ROOT")
	f, err := os.Open(archive)
	if err != nil {
		t.Fatalf("failed to open %s: %v", archive, err)
	}
	defer f.Close()
	root := t.TempDir()
	r := cpio.NewReader(f)
	for {
		h, err := r.Next()
		if err == io.EOF {
			return root
		}
		if err != nil {
			t.Fatalf("failed to read %s: %v", archive, err)
		}
		if err := unpackEntry(root, h, r); err != nil {
			t.Fatalf("failed to unpack %s: %v", archive, err)
		}
	}
}

func unpackEntry(root string, h *cpio.Header, r io.Reader) error {
	dst := filepath.Join(root, filepath.Clean("/"+h.Name))
	perm := os.FileMode(h.Mode.Perm())
	switch h.Mode & cpio.ModeType {
	case cpio.TypeDir:
		return os.MkdirAll(dst, 0o755)
	case cpio.TypeReg:
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		data, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", h.Name, err)
		}
		return os.WriteFile(dst, data, perm)
	case cpio.TypeSymlink:
		return os.Symlink(h.Linkname, dst)
	case cpio.TypeChar:
		return nil
	}
	return fmt.Errorf("%s: unexpected mode %o", h.Name, h.Mode)
}

// checkResolved asks the shipped loader how it resolves the shipped binary's
// libraries with only the root's library directory to search, and names
// each one it finds outside the root (in the test machine's own directories,
// which the loader searches after --library-path) or not at all.
func checkResolved(root string) error {
	cmd := exec.Command(filepath.Join(root, loaderPath), "--inhibit-cache",
		"--library-path", filepath.Join(root, libDir), "--list", filepath.Join(root, binPath))
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("failed to list the libraries of %s: %w\n%s", binPath, err, out)
	}
	var bad []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, where, ok := strings.Cut(strings.TrimSpace(line), " => ")
		if !ok {
			continue // linux-vdso.so.1 and the loader itself
		}
		if !strings.HasPrefix(where, root+"/") {
			bad = append(bad, fmt.Sprintf("%s => %s", name, where))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("libraries of %s not shipped: %s", binPath, strings.Join(bad, "; "))
	}
	return nil
}

// How the test runs the shipped mkfs.erofs.
const (
	// Chrooted in the root, as on the appliance: the kernel loads the
	// shipped interpreter, which sees nothing else.
	modeChroot = iota
	// The same, in a user and mount namespace of its own: for a test that
	// is not root.
	modeUserChroot
	// Through the shipped loader with only the root's library directory to
	// search, when neither may chroot; outside it, checkResolved guards.
	modeLoader
)

// shipped is the shipped files unpacked in a root, and how to run them.
type shipped struct {
	root string
	mode int
}

func newShipped(t *testing.T) *shipped {
	t.Helper()
	s := &shipped{root: unpackRoot(t)}
	for ; s.mode < modeLoader; s.mode++ {
		_, err := s.run("--version")
		if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EINVAL) {
			return s
		}
		t.Logf("cannot chroot (mode %d): %v", s.mode, err)
	}
	t.Logf("running %s through the shipped loader", binPath)
	return s
}

// path is where mkfs.erofs sees the root's file p.
func (s *shipped) path(p string) string {
	if s.mode == modeLoader {
		return filepath.Join(s.root, p)
	}
	return p
}

// run runs the shipped mkfs.erofs with args and an empty environment.
func (s *shipped) run(args ...string) ([]byte, error) {
	return s.runStdin(nil, args...)
}

// runStdin is run with stdin read from in.
func (s *shipped) runStdin(in io.Reader, args ...string) ([]byte, error) {
	cmd := exec.Command(binPath, args...)
	cmd.Dir = "/"
	switch s.mode {
	case modeChroot:
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: s.root}
	case modeUserChroot:
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Chroot:      s.root,
			Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		}
	default:
		cmd = exec.Command(filepath.Join(s.root, loaderPath), append([]string{"--inhibit-cache",
			"--library-path", filepath.Join(s.root, libDir), filepath.Join(s.root, binPath)}, args...)...)
	}
	cmd.Env = []string{}
	cmd.Stdin = in
	return cmd.CombinedOutput()
}

// layerTar is a small layer tar as containerd hands it to the differ: a
// directory, a file, a symlink, a hard link and an AUFS whiteout.
func layerTar(t *testing.T, content []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	headers := []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "etc/hello", Mode: 0o644, Size: int64(len(content))},
		{Typeflag: tar.TypeSymlink, Name: "etc/link", Linkname: "hello"},
		{Typeflag: tar.TypeLink, Name: "etc/hard", Linkname: "etc/hello"},
		{Typeflag: tar.TypeReg, Name: "etc/.wh.gone", Mode: 0o644},
	}
	for _, h := range headers {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("failed to write %s to the layer: %v", h.Name, err)
		}
		if h.Size > 0 {
			if _, err := tw.Write(content); err != nil {
				t.Fatalf("failed to write %s to the layer: %v", h.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("failed to finish the layer: %v", err)
	}
	return buf.Bytes()
}

func TestShippedFilesResolve(t *testing.T) {
	if err := checkResolved(unpackRoot(t)); err != nil {
		t.Fatal(err)
	}
}

// TestMissingLibraryFails leaves one library out of the root: the check that
// guards TestShippedFilesResolve fails naming it, and so does a chrooted run.
func TestMissingLibraryFails(t *testing.T) {
	s := newShipped(t)
	if err := os.Remove(filepath.Join(s.root, libDir, "libz.so.1")); err != nil {
		t.Fatal(err)
	}
	err := checkResolved(s.root)
	if err == nil || !strings.Contains(err.Error(), "libz.so.1") {
		t.Fatalf("checkResolved without libz.so.1: got %v, want an error naming it", err)
	}
	if s.mode == modeLoader {
		return // through the loader, the test machine's libz would be found
	}
	out, err := s.run("--version")
	if err == nil || !strings.Contains(string(out), "libz.so.1") {
		t.Fatalf("mkfs.erofs without libz.so.1 in its root: got %v, want a failure naming it:\n%s", err, out)
	}
}

func TestVersion(t *testing.T) {
	out, err := newShipped(t).run("--version")
	if err != nil {
		t.Fatalf("mkfs.erofs --version: %v\n%s", err, out)
	}
	if want := "mkfs.erofs (erofs-utils) 1.9"; !strings.HasPrefix(string(out), want) {
		t.Fatalf("mkfs.erofs --version says %q, want it to start with %q", out, want)
	}
}

// TestHelpOffersTar: containerd loads its EROFS differ only if `mkfs.erofs
// --help` succeeds and mentions "--tar=" (erofsutils.SupportGenerateFromTar).
func TestHelpOffersTar(t *testing.T) {
	out, err := newShipped(t).run("--help")
	if err != nil {
		t.Fatalf("mkfs.erofs --help: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("--tar=")) {
		t.Fatalf("mkfs.erofs --help does not offer --tar=, so containerd would skip its EROFS differ:\n%s", out)
	}
}

// TestConvertsLayer converts a layer as containerd's differ does
// (erofsutils.ConvertTarErofs: the tar on stdin, the differ's mkfs_options
// node.ErofsMkfsOptions, a UUID) and checks the image's superblock and data.
func TestConvertsLayer(t *testing.T) {
	s := newShipped(t)
	if err := os.Mkdir(filepath.Join(s.root, "work"), 0o755); err != nil {
		t.Fatal(err)
	}
	content := []byte("converted on the node by the shipped mkfs.erofs\n")
	uuid := "01234567-89ab-cdef-0123-456789abcdef"
	args := append([]string{"--tar=f", "--aufs", "--quiet", "-Enoinline_data"}, node.ErofsMkfsOptions()...)
	args = append(args, "-U", uuid, s.path("/work/layer.erofs"))
	out, err := s.runStdin(bytes.NewReader(layerTar(t, content)), args...)
	if err != nil {
		t.Fatalf("mkfs.erofs: %v\n%s", err, out)
	}
	img, err := os.ReadFile(filepath.Join(s.root, "work/layer.erofs"))
	if err != nil {
		t.Fatal(err)
	}
	if len(img) < superblockOffset+uuidOffset+16 {
		t.Fatalf("the image has %d bytes: too short for a superblock", len(img))
	}
	sb := img[superblockOffset:]
	if magic := binary.LittleEndian.Uint32(sb); magic != erofsMagic {
		t.Fatalf("the image's magic is %#x, want EROFS's %#x", magic, erofsMagic)
	}
	wantUUID := strings.ReplaceAll(uuid, "-", "")
	if got := fmt.Sprintf("%x", sb[uuidOffset:uuidOffset+16]); got != wantUUID {
		t.Fatalf("the image's UUID is %s, want %s (-U)", got, wantUUID)
	}
	if !bytes.Contains(img, content) {
		t.Fatalf("the image does not hold the content of etc/hello")
	}
}
