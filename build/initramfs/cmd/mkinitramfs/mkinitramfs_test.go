package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
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
	if err := run(spec, out, "none", "cpio"); err != nil {
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
	if err := run(spec, plain, "none", "cpio"); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(plain)
	for kind, tool := range map[string][]string{"zstd": {"zstd", "-dc"}, "gzip": {"gzip", "-dc"}} {
		out := filepath.Join(dir, "initramfs."+kind)
		if err := run(spec, out, kind, "cpio"); err != nil {
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
		if err := run(spec, out, "zstd", "cpio"); err != nil {
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
	err := run(writeSpec(t, dir, spec), filepath.Join(dir, "out"), "none", "cpio")
	if err == nil || !strings.Contains(err.Error(), "/init is given twice") {
		t.Fatalf("run = %v, want a conflict on /init", err)
	}
	spec = fullSpec(t, dir)
	spec.Files = append(spec.Files, File{Path: "/init/x", Src: spec.Files[0].Src, Mode: 0o644})
	err = run(writeSpec(t, dir, spec), filepath.Join(dir, "out"), "none", "cpio")
	if err == nil || !strings.Contains(err.Error(), "below /init") {
		t.Fatalf("run = %v, want an error about a file below /init", err)
	}
	spec = fullSpec(t, dir)
	spec.Files[0].Src = filepath.Join(dir, "missing")
	err = run(writeSpec(t, dir, spec), filepath.Join(dir, "out"), "none", "cpio")
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("run = %v, want an error naming the missing source", err)
	}
}

// The tar format holds the same tree as the cpio: every entry with its type,
// mode, contents, link target and device numbers, uid/gid 0 and mtime 0,
// sorted; GNU tar reads it, and a second run gives the same bytes.
func TestTarHoldsTheTree(t *testing.T) {
	dir := t.TempDir()
	spec := writeSpec(t, dir, fullSpec(t, dir))
	out := filepath.Join(dir, "tree.tar")
	if err := run(spec, out, "none", "tar"); err != nil {
		t.Fatalf("run: %v", err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	got := map[string]*tar.Header{}
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.ModTime.Unix() != 0 {
			t.Errorf("%s: uid %d gid %d mtime %v, want 0 0 0", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		if h.Name == "init" {
			b, _ := io.ReadAll(tr)
			if string(b) != "#!/bin/sh\necho hi\n" {
				t.Errorf("init holds %q", b)
			}
		}
		got[h.Name] = h
		names = append(names, h.Name)
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("entries are not sorted: %q", names)
	}
	want := []struct {
		name string
		typ  byte
		mode int64
	}{
		{"init", tar.TypeReg, 0o755},
		{"etc/", tar.TypeDir, 0o755},
		{"lib/modules/modules.dep", tar.TypeReg, 0o644},
		{"proc/", tar.TypeDir, 0o755},
		{"bin/sh", tar.TypeSymlink, 0o777},
		{"dev/console", tar.TypeChar, 0o600},
	}
	for _, w := range want {
		h := got[w.name]
		if h == nil {
			t.Errorf("%s is missing (have %q)", w.name, names)
			continue
		}
		if h.Typeflag != w.typ || h.Mode != w.mode {
			t.Errorf("%s: type %q mode %o, want %q %o", w.name, h.Typeflag, h.Mode, w.typ, w.mode)
		}
	}
	if h := got["bin/sh"]; h != nil && h.Linkname != "/init" {
		t.Errorf("bin/sh -> %q, want /init", h.Linkname)
	}
	if h := got["dev/console"]; h != nil && (h.Devmajor != 5 || h.Devminor != 1) {
		t.Errorf("dev/console is %d:%d, want 5:1", h.Devmajor, h.Devminor)
	}
	if b, err := exec.Command("tar", "-tf", out).CombinedOutput(); err != nil {
		t.Errorf("GNU tar -t: %v\n%s", err, b)
	}
	again := filepath.Join(dir, "again.tar")
	if err := run(spec, again, "none", "tar"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, out), readFile(t, again)) {
		t.Error("two runs gave different tars")
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
