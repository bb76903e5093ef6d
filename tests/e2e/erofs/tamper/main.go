// Command tamper changes an appliance's EROFS layer cache "at rest", after
// the build wrote the preseed tree and its manifest, for the E2E's bad-input
// cases: -flip flips one byte of the ELF header of the first program in a
// bundle's top cached layer (same size: only dm-verity can notice, at read
// time), -drop-sidecar removes the dm-verity sidecar of a bundle's top
// cached layer. Every other entry is copied unchanged. It is a test tool: it
// must never be part of a shipped image.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/erofscache"
)

// topLayerEntry is the tar entry name of the top cached layer of the bundle
// named name in the manifest.
func topLayerEntry(m *bundleformat.Manifest, name string) (string, error) {
	for _, b := range m.Bundles {
		if b.Name != name {
			continue
		}
		if len(b.CachedLayers) == 0 {
			return "", fmt.Errorf("bundle %s has no cached layer", name)
		}
		return strings.TrimPrefix(b.CachedLayers[len(b.CachedLayers)-1].Path, "/"), nil
	}
	return "", fmt.Errorf("no bundle %s in the manifest", name)
}

// flipELF flips a byte of the first ELF header at a block boundary of an
// uncompressed EROFS image (file data starts on a block).
func flipELF(blob []byte) error {
	for off := 0; off+erofscache.VerityBlockSize <= len(blob); off += erofscache.VerityBlockSize {
		if bytes.HasPrefix(blob[off:], []byte("\x7fELF")) {
			blob[off+0x20] ^= 0xff
			return nil
		}
	}
	return errors.New("no ELF header on a block boundary")
}

func run(in, out, manifest, flip, drop string) error {
	mb, err := os.ReadFile(manifest)
	if err != nil {
		return err
	}
	m, err := bundleformat.ParseManifest(mb)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", manifest, err)
	}
	targets := map[string]string{}
	for what, bundle := range map[string]string{"flip": flip, "drop": drop} {
		if bundle == "" {
			continue
		}
		name, err := topLayerEntry(m, bundle)
		if err != nil {
			return err
		}
		if what == "drop" {
			name = erofscache.SidecarPath(name)
		}
		targets[name] = what
	}
	return copyTar(in, out, targets)
}

// copyTar copies in to out, flipping or dropping the entries of targets.
func copyTar(in, out string, targets map[string]string) error {
	r, err := os.Open(in)
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := os.Create(out)
	if err != nil {
		return err
	}
	defer w.Close()
	tr, tw := tar.NewReader(r), tar.NewWriter(w)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", in, err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return fmt.Errorf("failed to read %s in %s: %w", h.Name, in, err)
		}
		switch targets[h.Name] {
		case "drop":
			delete(targets, h.Name)
			continue
		case "flip":
			if err := flipELF(body); err != nil {
				return fmt.Errorf("%s in %s: %w", h.Name, in, err)
			}
			delete(targets, h.Name)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(body); err != nil {
			return err
		}
	}
	for name := range targets {
		return fmt.Errorf("%s has no entry %s", in, name)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return w.Close()
}

func main() {
	in := flag.String("in", "", "the preseed tree tar")
	out := flag.String("out", "", "the tampered tree tar to write")
	manifest := flag.String("manifest", "", "the tree's preseed manifest")
	flip := flag.String("flip", "", "bundle name: flip a byte of its top cached layer's first ELF header")
	drop := flag.String("drop-sidecar", "", "bundle name: drop its top cached layer's dm-verity sidecar")
	flag.Parse()
	if err := run(*in, *out, *manifest, *flip, *drop); err != nil {
		fmt.Fprintln(os.Stderr, "tamper:", err)
		os.Exit(1)
	}
}
