// Command writetarball writes a docker-save image tarball with
// go-containerregistry's tarball writer, so that oci_from_tarball is tested
// at build time on a tarball the project's own code did not write. The
// image holds one binary as its entrypoint. It is a test tool: it must not
// be used to build images that ship.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/zstd"
)

func main() {
	binary := flag.String("binary", "", "the program to put in the image")
	path := flag.String("path", "/hello", "its path in the image, the entrypoint")
	tag := flag.String("tag", "", "the image's RepoTag")
	comp := flag.String("compression", "", `of the tarball: "", "gzip" or "zstd"`)
	out := flag.String("out", "", "the tarball to write")
	flag.Parse()
	if err := run(*binary, *path, *tag, *comp, *out); err != nil {
		fmt.Fprintf(os.Stderr, "writetarball: %v\n", err)
		os.Exit(1)
	}
}

func run(binary, path, tag, comp, out string) error {
	img, err := image(binary, path)
	if err != nil {
		return err
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("invalid tag %q: %w", tag, err)
	}
	var b bytes.Buffer
	if err := tarball.Write(ref, img, &b); err != nil {
		return fmt.Errorf("failed to write the tarball: %w", err)
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", out, err)
	}
	defer f.Close()
	w, finish, err := compressor(f, comp)
	if err != nil {
		return err
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("failed to write %s: %w", out, err)
	}
	if err := finish(); err != nil {
		return fmt.Errorf("failed to finish %s: %w", out, err)
	}
	return f.Close()
}

func compressor(w io.Writer, comp string) (io.Writer, func() error, error) {
	switch comp {
	case "":
		return w, func() error { return nil }, nil
	case "gzip":
		gw := gzip.NewWriter(w)
		return gw, gw.Close, nil
	case "zstd":
		zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("failed to start zstd: %w", err)
		}
		return zw, zw.Close, nil
	}
	return nil, nil, fmt.Errorf("unknown compression %q", comp)
}

// image is linux/amd64 with the binary at path, owned by root, mtime 0,
// run as nobody: the same bytes every time.
func image(binary, path string) (v1.Image, error) {
	data, err := os.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", binary, err)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	hdr := &tar.Header{Name: path[1:], Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, fmt.Errorf("failed to write the layer: %w", err)
	}
	if _, err := tw.Write(data); err != nil {
		return nil, fmt.Errorf("failed to write the layer: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("failed to write the layer: %w", err)
	}
	layer, err := tarball.LayerFromReader(bytes.NewReader(b.Bytes()))
	if err != nil {
		return nil, fmt.Errorf("failed to make the layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("failed to add the layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("failed to read the config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = []string{path}
	cf.Config.User = "65534:65534"
	return mutate.ConfigFile(img, cf)
}
