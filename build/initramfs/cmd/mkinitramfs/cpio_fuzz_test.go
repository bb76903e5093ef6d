package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
)

// The fuzz input is a script of archive inputs, one per line, fields
// separated by tabs (a CONTENT or TARGET in Go quotes is unquoted):
//
//	dir    PATH
//	file   PATH MODE CONTENT          (a file of the build)
//	link   PATH TARGET
//	dev    PATH TYPE MAJOR MINOR MODE (TYPE c or b)
//	tar                               (starts another tar; t* lines go to the last)
//	tdir   PATH MODE
//	tfile  PATH MODE CONTENT
//	tlink  PATH TARGET
//
// MODE, MAJOR and MINOR are octal or decimal numbers as written.
// Lines that do not parse are skipped, so every mutation is a script.

// Limits of the newc format and of the kernel's unpacker.
const (
	kernelNameMax   = 4095 // namesize, with the NUL, is at most PATH_MAX
	kernelTargetMax = 4095 // symlink(2) takes at most PATH_MAX with the NUL
	kernelSegMax    = 255  // NAME_MAX
	maxLines        = 64   // keeps each input fast
)

// fuzzInput is one input the script asks for, as the model sees it.
type fuzzInput struct {
	raw      string // path as written
	typ      uint32 // modeDir, modeFile, ...
	perm     uint32
	explicit bool   // a directory whose mode was given (tars), not 0755
	data     string // file content or link target
	badType  bool   // a device whose type is neither c nor b
	order    int    // position in the writer's order of processing
}

// fuzzSpec is a script turned into the writer's spec and the model's inputs.
type fuzzSpec struct {
	spec   Spec
	inputs []fuzzInput
}

// FuzzCpio writes archives from random specs with the writer and reads them
// back with an independent newc reader (cavaliergopher/cpio): what the
// writer accepts comes back entry for entry (names, types, modes, sizes,
// contents, link targets, every parent directory before its children,
// uid/gid/mtime 0), and the same spec gives the same bytes. Inputs the kernel
// could not unpack as given (NUL in names, overlong names, a path given
// twice, a file below a non-directory, ...) are refused with an error naming
// a path. Device numbers are not checked here: the reader does not decode
// them; TestGNUCpioReadsArchive checks them with GNU cpio.
func FuzzCpio(f *testing.F) {
	for _, s := range cpioSeeds() {
		f.Add(s)
	}
	// One directory per fuzzing process, whose inputs run one at a time;
	// each input rewrites the same source files.
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, script string) {
		fs, err := buildSpec(dir, script)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		a, err := load(&fs.spec)
		if err == nil {
			err = a.write(&out)
		}
		reason := invalidReason(fs.inputs)
		switch {
		case err != nil && reason == "":
			t.Fatalf("refused a valid spec: %v\nscript %q", err, script)
		case err == nil && reason != "":
			t.Fatalf("accepted a spec the kernel cannot unpack as given (%s)\nscript %q", reason, script)
		case err != nil:
			checkErrorNamesPath(t, err, fs.inputs)
			return
		}
		checkArchive(t, out.Bytes(), expected(fs.inputs))
		again, err := load(&fs.spec)
		if err != nil {
			t.Fatalf("second load: %v", err)
		}
		var out2 bytes.Buffer
		if err := again.write(&out2); err != nil {
			t.Fatalf("second write: %v", err)
		}
		if !bytes.Equal(out.Bytes(), out2.Bytes()) {
			t.Fatalf("the same spec gave different archives\nscript %q", script)
		}
	})
}

// buildSpec parses script, writes the files and tars it names under dir and
// returns the spec and the model's list of inputs in the writer's order:
// dirs, files, tars, symlinks (sorted), devices.
func buildSpec(dir, script string) (*fuzzSpec, error) {
	var dirs, files, tars, links, devs []fuzzInput
	spec := Spec{Symlinks: map[string]string{}}
	var tarInputs [][]fuzzInput
	lines := strings.Split(script, "\n")
	if len(lines) > maxLines {
		lines = lines[:maxLines]
	}
	for _, line := range lines {
		f := strings.Split(line, "\t")
		in, ok := parseLine(f)
		if !ok {
			continue
		}
		switch f[0] {
		case "dir":
			spec.Dirs = append(spec.Dirs, in.raw)
			dirs = append(dirs, in)
		case "file":
			src := filepath.Join(dir, fmt.Sprintf("src-%d", len(files)))
			if err := os.WriteFile(src, []byte(in.data), 0o644); err != nil {
				return nil, err
			}
			spec.Files = append(spec.Files, File{Path: in.raw, Src: src, Mode: in.perm})
			in.perm &= 0o7777
			files = append(files, in)
		case "link":
			spec.Symlinks[in.raw] = in.data
		case "dev":
			spec.Devices = append(spec.Devices, Device{Path: in.raw, Type: f[2], Major: parseNum(f[3]), Minor: parseNum(f[4]), Mode: in.perm})
			in.perm &= 0o7777
			devs = append(devs, in)
		case "tar":
			tarInputs = append(tarInputs, nil)
		default: // tdir, tfile, tlink
			if len(tarInputs) == 0 {
				tarInputs = append(tarInputs, nil)
			}
			tarInputs[len(tarInputs)-1] = append(tarInputs[len(tarInputs)-1], in)
		}
	}
	for i, entries := range tarInputs {
		p := filepath.Join(dir, fmt.Sprintf("tar-%d", i))
		written, err := writeTar(p, entries)
		if err != nil {
			return nil, err
		}
		spec.Tars = append(spec.Tars, p)
		tars = append(tars, written...)
	}
	for _, p := range sortedKeys(spec.Symlinks) {
		links = append(links, fuzzInput{raw: p, typ: modeSymlink, perm: 0o777, data: spec.Symlinks[p]})
	}
	var all []fuzzInput
	for _, group := range [][]fuzzInput{dirs, files, tars, links, devs} {
		all = append(all, group...)
	}
	for i := range all {
		all[i].order = i
	}
	return &fuzzSpec{spec: spec, inputs: all}, nil
}

// parseLine reads one script line; ok is false for lines that do not parse.
func parseLine(f []string) (in fuzzInput, ok bool) {
	want := map[string]int{"dir": 2, "file": 4, "link": 3, "dev": 6, "tar": 1, "tdir": 3, "tfile": 4, "tlink": 3}
	n, known := want[f[0]]
	if !known || len(f) != n {
		return in, false
	}
	if n > 1 {
		in.raw = f[1]
	}
	switch f[0] {
	case "dir":
		in.typ, in.perm = modeDir, 0o755
	case "tdir":
		in.typ, in.perm, in.explicit = modeDir, parseNum(f[2])&0o7777, true
	case "file", "tfile":
		in.typ, in.perm, in.data = modeFile, parseNum(f[2]), unquote(f[3])
		if f[0] == "tfile" {
			in.perm &= 0o7777
		}
	case "link", "tlink":
		in.typ, in.perm, in.data = modeSymlink, 0o777, unquote(f[2])
	case "dev":
		switch f[2] {
		case "c":
			in.typ = modeChar
		case "b":
			in.typ = modeBlock
		default:
			in.badType = true
		}
		in.perm = parseNum(f[5])
	}
	return in, true
}

func parseNum(s string) uint32 {
	n, _ := strconv.ParseUint(s, 0, 32)
	return uint32(n)
}

func unquote(s string) string {
	if u, err := strconv.Unquote(s); err == nil {
		return u
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// writeTar writes entries as a tar at p and returns those the tar format
// could hold (archive/tar refuses, e.g., NUL in names).
func writeTar(p string, entries []fuzzInput) ([]fuzzInput, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var written []fuzzInput
	for _, e := range entries {
		h := &tar.Header{Name: e.raw, Mode: int64(e.perm)}
		switch e.typ {
		case modeDir:
			h.Typeflag = tar.TypeDir
		case modeFile:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		case modeSymlink:
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.data
		}
		if err := tw.WriteHeader(h); err != nil {
			continue
		}
		if e.typ == modeFile {
			if _, err := io.WriteString(tw, e.data); err != nil {
				return nil, err
			}
		}
		written = append(written, e)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return written, os.WriteFile(p, buf.Bytes(), 0o644)
}

// archiveKey is the archive name of an input path: without one leading and
// one trailing slash; ok is false when that is not a plain relative path
// whose components the kernel can create.
func archiveKey(raw string) (key string, ok bool) {
	key = strings.TrimPrefix(raw, "/")
	key = strings.TrimSuffix(key, "/")
	if key == "" || strings.IndexByte(key, 0) >= 0 {
		return key, false
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." || len(seg) > kernelSegMax {
			return key, false
		}
	}
	return key, true
}

// invalidReason says why the kernel could not unpack the inputs as given,
// or "" when it could.
func invalidReason(inputs []fuzzInput) string {
	byKey := map[string][]fuzzInput{}
	for _, in := range inputs {
		key, ok := archiveKey(in.raw)
		switch {
		case !ok:
			return fmt.Sprintf("path %q is not a clean path below /", in.raw)
		case len(key) > kernelNameMax:
			return fmt.Sprintf("path of %d bytes", len(key))
		case in.badType:
			return "a device type that is neither c nor b"
		case in.typ == modeSymlink && (in.data == "" || len(in.data) > kernelTargetMax || strings.IndexByte(in.data, 0) >= 0):
			return fmt.Sprintf("symlink target %q", in.data)
		}
		byKey[key] = append(byKey[key], in)
	}
	for key, ins := range byKey {
		for _, in := range ins {
			if len(ins) > 1 && in.typ != modeDir {
				return fmt.Sprintf("/%s given twice", key)
			}
		}
		for d := path.Dir(key); d != "."; d = path.Dir(d) {
			if parents, ok := byKey[d]; ok && parents[0].typ != modeDir {
				return fmt.Sprintf("/%s below non-directory /%s", key, d)
			}
		}
	}
	return ""
}

// checkErrorNamesPath: a refusal names one of the paths of the spec.
func checkErrorNamesPath(t *testing.T, err error, inputs []fuzzInput) {
	t.Helper()
	msg := err.Error()
	for _, in := range inputs {
		key, _ := archiveKey(in.raw)
		for _, form := range []string{in.raw, strconv.Quote(in.raw), "/" + key} {
			if form != "" && form != "/" && strings.Contains(msg, form) {
				return
			}
		}
	}
	t.Fatalf("error names no path of the spec: %v", err)
}

// want is an archive entry as the model expects it.
type want struct {
	mode uint32
	data string
}

// expected is the archive valid inputs make: every input under its key
// (directories merged: the mode of the last tar that gives one, else 0755)
// and every parent not given as a directory of mode 0755.
func expected(inputs []fuzzInput) map[string]want {
	out := map[string]want{}
	explicit := map[string]bool{}
	for _, in := range inputs {
		key, _ := archiveKey(in.raw)
		for d := path.Dir(key); d != "."; d = path.Dir(d) {
			if _, ok := out[d]; !ok {
				out[d] = want{mode: modeDir | 0o755}
			}
		}
		if in.typ == modeDir && !in.explicit && (explicit[key] || out[key].mode != 0) {
			continue
		}
		explicit[key] = explicit[key] || in.explicit
		out[key] = want{mode: in.typ | in.perm, data: in.data}
	}
	return out
}

// checkArchive reads the archive with cavaliergopher/cpio and compares it
// with the model.
func checkArchive(t *testing.T, archive []byte, wantEntries map[string]want) {
	t.Helper()
	r := cpio.NewReader(bytes.NewReader(archive))
	seen := map[string]bool{}
	inodes := map[int64]bool{}
	prev := ""
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the reader refuses the archive after %q: %v", prev, err)
		}
		if len(seen) > 0 && h.Name <= prev {
			t.Fatalf("entry %q after %q: not sorted or given twice", h.Name, prev)
		}
		prev = h.Name
		if d := path.Dir(h.Name); d != "." && !seen[d] {
			t.Fatalf("entry %q comes before its directory %q", h.Name, d)
		}
		seen[h.Name] = true
		if h.Uid != 0 || h.Guid != 0 || h.ModTime.Unix() != 0 || inodes[h.Inode] || h.Inode == 0 {
			t.Fatalf("entry %q: uid %d gid %d mtime %v inode %d (seen: %v), want 0 0 0 and a new inode", h.Name, h.Uid, h.Guid, h.ModTime.Unix(), h.Inode, inodes[h.Inode])
		}
		inodes[h.Inode] = true
		w, ok := wantEntries[h.Name]
		if !ok {
			t.Fatalf("entry %q was not asked for", h.Name)
		}
		checkEntry(t, r, h, w)
	}
	for name := range wantEntries {
		if !seen[name] {
			t.Fatalf("entry %q is missing", name)
		}
	}
}

func checkEntry(t *testing.T, r *cpio.Reader, h *cpio.Header, w want) {
	t.Helper()
	if uint32(h.Mode) != w.mode {
		t.Fatalf("entry %q: mode %o, want %o", h.Name, h.Mode, w.mode)
	}
	got := ""
	switch w.mode & 0o170000 {
	case modeFile:
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("entry %q: %v", h.Name, err)
		}
		got = string(data)
		if h.Size != int64(len(w.data)) {
			t.Fatalf("entry %q: size %d, want %d", h.Name, h.Size, len(w.data))
		}
	case modeSymlink:
		got = h.Linkname
	default:
		if h.Size != 0 {
			t.Fatalf("entry %q (mode %o): size %d, want 0", h.Name, h.Mode, h.Size)
		}
	}
	if got != w.data {
		t.Fatalf("entry %q: content or target %q, want %q", h.Name, got, w.data)
	}
}

// cpioSeeds are specs like the appliance's initramfs (images/appliance:
// appliance.bzl): init and the container runtime as executables, CNI and
// preseed configuration files, the kernel modules' tar, the mount points and
// /dev/console; and smaller ones for each kind of entry.
func cpioSeeds() []string {
	conflist := strconv.Quote(`{
  "cniVersion": "1.0.0",
  "name": "pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.88.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    }
  ]
}
`)
	elf := strconv.Quote("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00>\x00\x01\x00\x00\x00")
	appliance := strings.Join([]string{
		"dir\t/etc", "dir\t/proc", "dir\t/run", "dir\t/sys", "dir\t/tmp", "dir\t/var",
		"file\t/init\t0755\t" + elf,
		"file\t/usr/bin/containerd\t0755\t" + elf,
		"file\t/usr/bin/containerd-shim-runc-v2\t0755\t" + elf,
		"file\t/usr/bin/runc\t0755\t" + elf,
		"file\t/opt/cni/bin/bridge\t0755\t" + elf,
		"file\t/opt/cni/bin/host-local\t0755\t" + elf,
		"file\t/opt/cni/bin/loopback\t0755\t" + elf,
		"file\t/etc/cni/net.d/10-pods.conflist\t0644\t" + conflist,
		"file\t/etc/appliance/preseed.json\t0644\t" + strconv.Quote(`{"bundles": [{"namespace": "k8s.io", "name": "pause"}]}`+"\n"),
		"tar",
		"tdir\tcontainerd/\t0755", "tdir\tcontainerd/preseed/\t0755", "tdir\tcontainerd/preseed/k8s.io/\t0755",
		"tfile\tcontainerd/preseed/k8s.io/pause.tar\t0644\t" + strconv.Quote("oci-layout\x00\x00\x00"),
		"tar",
		"tdir\tlib/modules/6.12.0/\t0755",
		"tfile\tlib/modules/6.12.0/modules.dep\t0644\t" + strconv.Quote("kernel/drivers/net/virtio_net.ko:\n"),
		"tfile\tlib/modules/6.12.0/kernel/drivers/net/virtio_net.ko\t0644\t" + elf,
		"tdir\tetc/modules-load.d/\t0755",
		"tfile\tetc/modules-load.d/appliance.conf\t0644\tvirtio_net",
		"dev\t/dev/console\tc\t5\t1\t0600",
	}, "\n")
	return []string{
		appliance,
		"file\t/init\t0755\t#!/bin/sh",
		"dir\t/proc\nlink\t/bin/sh\t/init\nlink\t/lib\tusr/lib",
		"dev\t/dev/console\tc\t5\t1\t0600\ndev\t/dev/vda\tb\t254\t0\t0660\ndev\t/dev/null\tc\t1\t3\t0666",
		"tdir\tlib/modules/\t0700\ntfile\tlib/modules/modules.dep\t0644\tdep\ntlink\tlib/modules/current\t.",
		"file\t/a\t04755\t\ntfile\tb/c\t02644\tx\ntdir\tb/\t01777",
		// Refused: a path twice, a file below a file, a path that is not clean.
		"file\t/init\t0755\tx\nlink\t/init\t/bin/true",
		"file\t/init\t0755\tx\nfile\t/init/x\t0644\ty",
		"dir\t/a/../b",
		"dev\t/dev/console\tp\t5\t1\t0600",
	}
}

// A file of 4 GiB or more does not fit newc's 8 hex digits of size: the
// writer must refuse it, not write a longer field that shifts the archive.
// (A sparse file: nothing is written to disk.)
func TestFileTooLargeForNewc(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(f.Truncate(1<<32), f.Close()); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Files: []File{{Path: "/big", Src: big, Mode: 0o644}}}
	_, err = load(&spec)
	if err == nil || !strings.Contains(err.Error(), big) || !strings.Contains(err.Error(), "4294967296 bytes") {
		t.Fatalf("load = %v, want an error naming %s and its size", err, big)
	}
}
