package main

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/tests/preseedtest"
)

// bundleSet is the whole bundles every path imports.
type bundleSet struct {
	// root is the preseed root: root/<ns>/image-NN.tar.
	root  string
	files []string
	// bytes is the size of the bundle files together.
	bytes int64
	// manifest is the preseed manifest of the files.
	manifest string
	// layers and layerBytes count the distinct layers (by diffID) and the
	// sum of their uncompressed sizes.
	layers     int
	layerBytes int64
}

// n is the number of images, one per bundle.
func (s *bundleSet) n() int { return len(s.files) }

// generate writes o.images bundles of o.total bytes together: each one
// shared base layer (of o.bases) and two layers of its own.
func generate(work string, o options) (*bundleSet, error) {
	per := o.total / int64(o.images)
	base := per / 3
	own := (per - base) / 2
	fmt.Printf("generating %d bundles of about %d MiB (base %d MiB shared by %d/%d images, 2 own layers of %d MiB)...\n",
		o.images, per>>20, base>>20, (o.images+o.bases-1)/o.bases, o.images, own>>20)
	start := time.Now()
	s := &bundleSet{root: filepath.Join(work, "preseed")}
	if err := os.MkdirAll(filepath.Join(s.root, ns), 0o755); err != nil {
		return nil, err
	}
	bases := make([]v1.Layer, o.bases)
	for i := range bases {
		var err error
		if bases[i], err = preseedtest.RandomLayer(uint64(1+i), base); err != nil {
			return nil, err
		}
		if err := s.addLayer(bases[i]); err != nil {
			return nil, err
		}
	}
	for i := range o.images {
		if err := s.write(i, bases[i%o.bases], own); err != nil {
			return nil, err
		}
	}
	var err error
	if s.manifest, err = writeManifest(filepath.Join(work, "preseed.json"), s.files); err != nil {
		return nil, err
	}
	fmt.Printf("generated %d bundles, %s in all (%d distinct layers, %s uncompressed), in %v\n",
		s.n(), mib(s.bytes), s.layers, mib(s.layerBytes), time.Since(start).Round(time.Millisecond))
	return s, nil
}

// write writes bundle i: base and two random layers of size own.
func (s *bundleSet) write(i int, base v1.Layer, own int64) error {
	layers := []v1.Layer{base}
	for j := range 2 {
		l, err := preseedtest.RandomLayer(uint64(1000+2*i+j), own)
		if err != nil {
			return err
		}
		if err := s.addLayer(l); err != nil {
			return err
		}
		layers = append(layers, l)
	}
	img, err := preseedtest.NewImage(layers...)
	if err != nil {
		return err
	}
	p := filepath.Join(s.root, ns, fmt.Sprintf("image-%02d.tar", i))
	size, err := preseedtest.WriteBundle(p, preseedtest.Image{Name: fmt.Sprintf("preseed.test/bench-%02d:1", i), Image: img})
	if err != nil {
		return err
	}
	s.files = append(s.files, p)
	s.bytes += size
	return nil
}

// addLayer counts a distinct layer and its uncompressed size, read whole.
func (s *bundleSet) addLayer(l v1.Layer) error {
	r, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer r.Close()
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return fmt.Errorf("failed to read a generated layer: %w", err)
	}
	s.layers++
	s.layerBytes += n
	return nil
}

// writeManifest writes the preseed manifest of the bundle files at p with
// the build's own code (build/oci/bundle.WriteTree, as //images:preseed.json
// is made; the tree itself is discarded). The manifest's paths are under
// /containerd/preseed, so preseed finds each bundle by its namespace and
// file name.
func writeManifest(p string, files []string) (string, error) {
	b, err := bundle.WriteTree(io.Discard, treeInputs(files))
	if err != nil {
		return "", fmt.Errorf("failed to make the preseed manifest: %w", err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return "", fmt.Errorf("failed to write the preseed manifest: %w", err)
	}
	return p, nil
}

// treeInputs places every bundle file in the bench namespace, by its name.
func treeInputs(files []string) []bundle.TreeInput {
	inputs := make([]bundle.TreeInput, 0, len(files))
	for _, f := range files {
		inputs = append(inputs, bundle.TreeInput{
			Namespace: ns, Name: strings.TrimSuffix(filepath.Base(f), ".tar"), Compression: bundleformat.None, File: f,
		})
	}
	return inputs
}

// untar unpacks a preseed tree (directories and regular files only, as
// WriteTreeCached writes it) under dir.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+hdr.Name))
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			err = writeFile(p, tr)
		default:
			err = fmt.Errorf("%s: unexpected tar entry type %q in the preseed tree", hdr.Name, hdr.Typeflag)
		}
		if err != nil {
			return err
		}
	}
}

func writeFile(p string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("failed to write %s: %w", p, err)
	}
	return f.Close()
}
