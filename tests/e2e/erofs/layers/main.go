// Command layers writes the two layer tars of the E2E's EROFS test image:
// a base layer, and a top layer that deletes a file of the base (an AUFS
// whiteout), replaces a directory's content (an opaque directory), and
// holds a hard link and a symlink. //tests/e2e/erofs/check verifies the
// result inside the container, so the E2E proves what the kernel mounts
// from the EROFS blobs the build made. It is a test tool: it must never be
// part of a shipped image.
package main

import (
	"archive/tar"
	"flag"
	"fmt"
	"os"
	"time"
)

// entry is one tar entry of a layer.
type entry struct {
	name, body, link string
	typ              byte
}

// The layers. The file names and contents are what check expects.
func base() []entry {
	return []entry{
		{name: "gone", typ: tar.TypeReg, body: "deleted by the top layer\n"},
		{name: "keep", typ: tar.TypeReg, body: "kept\n"},
		{name: "opaque/", typ: tar.TypeDir},
		{name: "opaque/old", typ: tar.TypeReg, body: "hidden by the opaque directory\n"},
	}
}

func top() []entry {
	return []entry{
		{name: ".wh.gone", typ: tar.TypeReg},
		{name: "data", typ: tar.TypeReg, body: "one inode, two names\n"},
		{name: "data-link", typ: tar.TypeLink, link: "data"},
		{name: "opaque/", typ: tar.TypeDir},
		{name: "opaque/.wh..wh..opq", typ: tar.TypeReg},
		{name: "opaque/new", typ: tar.TypeReg, body: "the only entry\n"},
		{name: "sym", typ: tar.TypeSymlink, link: "keep"},
	}
}

func write(path string, entries []entry) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", path, err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644,
			ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch e.typ {
		case tar.TypeDir:
			h.Mode = 0o755
		case tar.TypeReg:
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("failed to write %s to %s: %w", e.name, path, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			return fmt.Errorf("failed to write %s to %s: %w", e.name, path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("failed to finish %s: %w", path, err)
	}
	return f.Close()
}

func main() {
	baseOut := flag.String("base", "", "output: the base layer tar")
	topOut := flag.String("top", "", "output: the top layer tar")
	flag.Parse()
	if *baseOut == "" || *topOut == "" {
		fmt.Fprintln(os.Stderr, "layers: -base and -top are required")
		os.Exit(2)
	}
	for _, l := range []struct {
		path    string
		entries []entry
	}{{*baseOut, base()}, {*topOut, top()}} {
		if err := write(l.path, l.entries); err != nil {
			fmt.Fprintln(os.Stderr, "layers:", err)
			os.Exit(1)
		}
	}
}
