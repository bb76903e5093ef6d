package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func writeSpec(t *testing.T, dir string, spec Spec) string {
	t.Helper()
	p := filepath.Join(dir, "spec.json")
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func testTar(t *testing.T, dir string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "lib/modules/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "lib/modules/modules.dep", Mode: 0o644, Size: 4},
		{Typeflag: tar.TypeSymlink, Name: "lib/modules/current", Linkname: "."},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("dep\n"))
		}
	}
	tw.Close()
	p := filepath.Join(dir, "in.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func fullSpec(t *testing.T, dir string) Spec {
	t.Helper()
	initSrc := filepath.Join(dir, "init-binary")
	if err := os.WriteFile(initSrc, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return Spec{
		Files:    []File{{Path: "/init", Src: initSrc, Mode: 0o755}, {Path: "/etc/containerd/config.toml", Src: initSrc, Mode: 0o644}},
		Tars:     []string{testTar(t, dir)},
		Dirs:     []string{"/proc", "/sys", "/tmp"},
		Symlinks: map[string]string{"/bin/sh": "/init"},
		Devices:  []Device{{Path: "/dev/console", Type: "c", Major: 5, Minor: 1, Mode: 0o600}},
	}
}

// GNU cpio, the reference reader, unpacks everything with the right types,
// modes and contents.
func TestGNUCpioReadsArchive(t *testing.T) {
	dir := t.TempDir()
	spec := writeSpec(t, dir, fullSpec(t, dir))
	out := filepath.Join(dir, "initramfs.cpio")
	if err := run(spec, out, "none"); err != nil {
		t.Fatalf("run: %v", err)
	}
	root := filepath.Join(dir, "root")
	os.Mkdir(root, 0o755)
	in, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	cmd := exec.Command("cpio", "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir, cmd.Stdin = root, in
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, b)
	}
	checks := []struct {
		path string
		mode os.FileMode
	}{
		{"init", 0o755},
		{"etc/containerd/config.toml", 0o644},
		{"lib/modules/modules.dep", 0o644},
		{"proc", os.ModeDir | 0o755},
		{"etc", os.ModeDir | 0o755},
	}
	for _, c := range checks {
		st, err := os.Lstat(filepath.Join(root, c.path))
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if st.Mode() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, st.Mode(), c.mode)
		}
	}
	if target, err := os.Readlink(filepath.Join(root, "bin/sh")); err != nil || target != "/init" {
		t.Errorf("bin/sh -> %q (%v), want /init", target, err)
	}
	if target, err := os.Readlink(filepath.Join(root, "lib/modules/current")); err != nil || target != "." {
		t.Errorf("lib/modules/current -> %q (%v), want .", target, err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(root, "dev/console"), &st); err != nil {
		t.Fatalf("dev/console: %v", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != uint64(5<<8|1) {
		t.Errorf("dev/console: mode %o rdev %x, want a char device 5:1", st.Mode, st.Rdev)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "lib/modules/modules.dep")); string(data) != "dep\n" {
		t.Errorf("modules.dep = %q", data)
	}
	// Every entry is owned by root with mtime 0, whoever built it.
	list, err := exec.Command("sh", "-c", "cpio -itv --quiet < "+out).CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, list)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[2] != "root" || f[3] != "root" {
			t.Errorf("entry not owned by root:root: %q", line)
		}
		if !strings.Contains(line, "1970") {
			t.Errorf("entry mtime is not 0: %q", line)
		}
	}
}

// The compressed forms are read by the standard tools.
func TestCompressedFormsDecompress(t *testing.T) {
	dir := t.TempDir()
	spec := writeSpec(t, dir, fullSpec(t, dir))
	plain := filepath.Join(dir, "plain.cpio")
	if err := run(spec, plain, "none"); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(plain)
	for kind, tool := range map[string][]string{"zstd": {"zstd", "-dc"}, "gzip": {"gzip", "-dc"}} {
		out := filepath.Join(dir, "initramfs."+kind)
		if err := run(spec, out, kind); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		got, err := exec.Command(tool[0], append(tool[1:], out)...).Output()
		if err != nil {
			t.Fatalf("%s %s: %v", tool[0], out, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: decompressed archive differs from the plain one", kind)
		}
	}
}

func TestDeterministic(t *testing.T) {
	dir := t.TempDir()
	spec := writeSpec(t, dir, fullSpec(t, dir))
	var outs [][]byte
	for _, name := range []string{"a", "b"} {
		out := filepath.Join(dir, name)
		if err := run(spec, out, "zstd"); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(out)
		outs = append(outs, data)
	}
	if !bytes.Equal(outs[0], outs[1]) {
		t.Fatal("two runs gave different archives")
	}
}

func TestConflictsAreNamed(t *testing.T) {
	dir := t.TempDir()
	spec := fullSpec(t, dir)
	spec.Symlinks["/init"] = "/bin/true"
	err := run(writeSpec(t, dir, spec), filepath.Join(dir, "out"), "none")
	if err == nil || !strings.Contains(err.Error(), "/init is given twice") {
		t.Fatalf("run = %v, want a conflict on /init", err)
	}
	spec = fullSpec(t, dir)
	spec.Files = append(spec.Files, File{Path: "/init/x", Src: spec.Files[0].Src, Mode: 0o644})
	err = run(writeSpec(t, dir, spec), filepath.Join(dir, "out"), "none")
	if err == nil || !strings.Contains(err.Error(), "below /init") {
		t.Fatalf("run = %v, want an error about a file below /init", err)
	}
	spec = fullSpec(t, dir)
	spec.Files[0].Src = filepath.Join(dir, "missing")
	err = run(writeSpec(t, dir, spec), filepath.Join(dir, "out"), "none")
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("run = %v, want an error naming the missing source", err)
	}
}
