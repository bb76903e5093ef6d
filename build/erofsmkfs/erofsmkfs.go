// Package erofsmkfs runs the pinned mkfs.erofs of //third_party/erofs-utils
// as a build tool: the layer cache's conversions (build/oci/erofs) and the
// system image (build/appliance) are made by the very binary the appliance
// ships. It must not run any other mkfs.erofs, nor decide mkfs options
// (core/node holds those).
package erofsmkfs

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Mkfs is the pinned mkfs.erofs of //third_party/erofs-utils, the very
// binary the appliance ships: its file, the ELF interpreter it was built
// for, and each shared library it loads, by soname. The build runs it
// through that interpreter with those libraries only, so that neither the
// build machine's erofs-utils (another version, or none) nor its libraries
// can change a blob, a root hash or a release.
type Mkfs struct {
	Binary string
	Loader string
	// Libraries maps each soname to its file.
	Libraries map[string]string
}

// Install lays out dir so that "mkfs.erofs" on PATH is m: dir/lib holds a
// link per soname, and dir/bin/mkfs.erofs runs m.Binary through m.Loader
// with only dir/lib to load from. It returns dir/bin, for the front of
// PATH. containerd's converter runs "mkfs.erofs" by name; this is how it
// gets the pinned one.
func (m Mkfs) Install(dir string) (string, error) {
	abs := func(p string) (string, error) {
		a, err := filepath.Abs(p)
		if err == nil && strings.ContainsAny(a, "'\n") {
			err = fmt.Errorf("the path %q holds a quote or a newline", a)
		}
		return a, err
	}
	dir, err := abs(dir)
	if err != nil {
		return "", err
	}
	bin, lib := filepath.Join(dir, "bin"), filepath.Join(dir, "lib")
	for _, d := range []string{bin, lib} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("failed to create %s: %w", d, err)
		}
	}
	for soname, file := range m.Libraries {
		if soname != filepath.Base(soname) {
			return "", fmt.Errorf("library name %q is not a soname", soname)
		}
		target, err := abs(file)
		if err != nil {
			return "", err
		}
		if err := os.Symlink(target, filepath.Join(lib, soname)); err != nil {
			return "", fmt.Errorf("failed to link library %s: %w", soname, err)
		}
	}
	// A copy, executable whatever mode the package's file has here.
	loader := filepath.Join(bin, "ld.so")
	if err := copyExecutable(m.Loader, loader); err != nil {
		return "", err
	}
	binary, err := abs(m.Binary)
	if err != nil {
		return "", err
	}
	script := fmt.Sprintf("#!/bin/sh\nexec '%s' --library-path '%s' '%s' \"$@\"\n", loader, lib, binary)
	if err := os.WriteFile(filepath.Join(bin, "mkfs.erofs"), []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("failed to write the mkfs.erofs wrapper: %w", err)
	}
	return bin, nil
}

func copyExecutable(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		return fmt.Errorf("failed to write %s: %w", dst, err)
	}
	return nil
}

// ParseLibraries turns "soname=file" arguments into Mkfs.Libraries.
func ParseLibraries(args []string) (map[string]string, error) {
	out := make(map[string]string, len(args))
	for _, a := range args {
		soname, file, ok := strings.Cut(a, "=")
		if !ok || soname == "" || file == "" {
			return nil, fmt.Errorf("library %q: want soname=file", a)
		}
		if _, dup := out[soname]; dup {
			return nil, fmt.Errorf("library %s given twice", soname)
		}
		out[soname] = file
	}
	return out, nil
}

// AddFlags declares on fs the flags that mkfs_erofs_args
// (//third_party/erofs-utils:mkfs_erofs.bzl) passes: --mkfs_erofs,
// --mkfs_loader and a --mkfs_lib soname=file per library. The returned
// function, called after fs.Parse, gives the tool they name, or an error
// when one is missing or malformed: the build never falls back to another
// mkfs.erofs.
func AddFlags(fs *flag.FlagSet) func() (Mkfs, error) {
	var m Mkfs
	var libs libFlag
	fs.StringVar(&m.Binary, "mkfs_erofs", "", "the pinned mkfs.erofs binary")
	fs.StringVar(&m.Loader, "mkfs_loader", "", "the ELF interpreter it was built for")
	fs.Var(&libs, "mkfs_lib", "soname=file of a library it loads, repeatable")
	return func() (Mkfs, error) {
		if m.Binary == "" || m.Loader == "" || len(libs) == 0 {
			return Mkfs{}, fmt.Errorf("--mkfs_erofs, --mkfs_loader and --mkfs_lib are required: only the pinned mkfs.erofs is run")
		}
		var err error
		m.Libraries, err = ParseLibraries(libs)
		return m, err
	}
}

// libFlag collects the repeated --mkfs_lib.
type libFlag []string

func (l *libFlag) String() string     { return strings.Join(*l, ",") }
func (l *libFlag) Set(v string) error { *l = append(*l, v); return nil }
