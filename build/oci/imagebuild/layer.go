// Package imagebuild builds container images deterministically: layer tars
// from files, and images from a base, layers and a config, written as OCI
// image layouts. The same inputs always give the same bytes. It must not read
// anything but its declared inputs (no clock, no host user or path) and must
// not touch the network.
package imagebuild

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// Epoch is the modification time of every tar entry and the creation time of
// every image: fixed, so that outputs do not depend on when they were built.
func Epoch() time.Time { return time.Unix(0, 0).UTC() }

// LayerFile is one regular file of a layer: its absolute path in the image,
// the host file to copy and its mode.
type LayerFile struct {
	Path   string `json:"path"`
	Source string `json:"source"`
	Mode   int64  `json:"mode"`
}

// WriteLayer writes a tar with files at their paths, plus the directories
// leading to them (mode 0755), sorted by path, owned by 0:0 with no user or
// group names and a fixed mtime.
func WriteLayer(w io.Writer, files []LayerFile) error {
	entries := map[string]*LayerFile{}
	dirs := map[string]bool{}
	for i := range files {
		f := &files[i]
		p, err := cleanImagePath(f.Path)
		if err != nil {
			return fmt.Errorf("failed to add %s to layer: %w", f.Source, err)
		}
		if _, dup := entries[p]; dup {
			return fmt.Errorf("failed to add %s to layer: path /%s given twice", f.Source, p)
		}
		entries[p] = f
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for d := range dirs {
		if _, clash := entries[d]; clash {
			return fmt.Errorf("failed to build layer: /%s is both a file and a directory", d)
		}
	}
	// Directories are named with a trailing slash in tars; sort on the bare
	// path so a directory comes right before its contents.
	names := make([]string, 0, len(entries)+len(dirs))
	for p := range entries {
		names = append(names, p)
	}
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)

	tw := tar.NewWriter(w)
	for _, n := range names {
		hdr := &tar.Header{Name: n, ModTime: Epoch(), Uid: 0, Gid: 0, Format: tar.FormatPAX}
		f, isFile := entries[n]
		if !isFile {
			hdr.Typeflag = tar.TypeDir
			hdr.Name = n + "/"
			hdr.Mode = 0o755
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("failed to write directory /%s to layer: %w", n, err)
			}
			continue
		}
		if err := writeFileEntry(tw, hdr, f); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("failed to finish layer tar: %w", err)
	}
	return nil
}

func writeFileEntry(tw *tar.Writer, hdr *tar.Header, f *LayerFile) error {
	src, err := os.Open(f.Source)
	if err != nil {
		return fmt.Errorf("failed to open layer file %s: %w", f.Source, err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return fmt.Errorf("failed to stat layer file %s: %w", f.Source, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("failed to add %s to layer: not a regular file", f.Source)
	}
	hdr.Typeflag = tar.TypeReg
	hdr.Mode = f.Mode
	if hdr.Mode == 0 {
		hdr.Mode = 0o644
	}
	hdr.Size = st.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("failed to write header of %s to layer: %w", f.Source, err)
	}
	if _, err := io.Copy(tw, src); err != nil {
		return fmt.Errorf("failed to copy %s into layer: %w", f.Source, err)
	}
	return nil
}

// cleanImagePath turns "/usr/bin/x" into "usr/bin/x", refusing paths that
// are relative, escape the root or name the root itself.
func cleanImagePath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("image path %q is not absolute", p)
	}
	c := strings.TrimPrefix(path.Clean(p), "/")
	if c == "" || c == "." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("image path %q does not name a file", p)
	}
	return c, nil
}
