package imagebuild

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// indexImage is one image of an index: its manifest's descriptor with the
// platform its config names, and the blobs it needs.
type indexImage struct {
	dir   layoutDir
	desc  v1.Descriptor
	blobs []v1.Descriptor
}

// WriteIndex writes, as a new OCI layout at out, an image index of the
// images of the layouts dirs (each holding exactly one image manifest), in
// that order, each described with the platform of its config. index.json
// names the index alone. target names the rule in errors. The index is
// encoded here rather than by go-containerregistry, which sets artifactType
// on image descriptors: the bytes are exactly the spec's fields, always the
// same for the same images. It returns the index's digest.
func WriteIndex(target, out string, dirs []string) (v1.Hash, error) {
	if len(dirs) == 0 {
		return v1.Hash{}, fmt.Errorf("oci_image_index %s: no images", target)
	}
	var imgs []indexImage
	seen := map[string]string{}
	for _, dir := range dirs {
		img, err := readIndexImage(target, layoutDir(dir))
		if err != nil {
			return v1.Hash{}, err
		}
		p := bundleformat.FormatPlatform(ocispec.Platform{OS: img.desc.Platform.OS, Architecture: img.desc.Platform.Architecture, Variant: img.desc.Platform.Variant})
		if other, ok := seen[p]; ok {
			return v1.Hash{}, fmt.Errorf("oci_image_index %s: images %s and %s are both for platform %s; an index holds one image per platform", target, other, dir, p)
		}
		seen[p] = dir
		imgs = append(imgs, img)
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, img := range imgs {
		idx.Manifests = append(idx.Manifests, img.desc)
	}
	raw, err := json.Marshal(idx)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("oci_image_index %s: failed to encode the index: %w", target, err)
	}
	h, size, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("oci_image_index %s: failed to hash the index: %w", target, err)
	}
	if err := writeLayoutFiles(out, raw, v1.Descriptor{MediaType: types.OCIImageIndex, Digest: h, Size: size}); err != nil {
		return v1.Hash{}, fmt.Errorf("oci_image_index %s: %w", target, err)
	}
	for _, img := range imgs {
		for _, b := range img.blobs {
			if err := copyBlob(img.dir, out, b); err != nil {
				return v1.Hash{}, fmt.Errorf("oci_image_index %s: %w", target, err)
			}
		}
	}
	return h, nil
}

// readIndexImage reads the single image of a layout, its manifest and config
// checked against their digests.
func readIndexImage(target string, l layoutDir) (indexImage, error) {
	im, err := l.index()
	if err != nil {
		return indexImage{}, fmt.Errorf("oci_image_index %s: %w", target, err)
	}
	if len(im.Manifests) != 1 || !im.Manifests[0].MediaType.IsImage() {
		what := fmt.Sprintf("%d descriptors", len(im.Manifests))
		if len(im.Manifests) == 1 {
			what = "a " + string(im.Manifests[0].MediaType)
		}
		return indexImage{}, fmt.Errorf("oci_image_index %s: image %s must be an OCI layout of exactly one image manifest, its index.json names %s", target, l, what)
	}
	d := im.Manifests[0]
	raw, err := l.readJSON(d)
	if err != nil {
		return indexImage{}, fmt.Errorf("oci_image_index %s: %w", target, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return indexImage{}, fmt.Errorf("oci_image_index %s: manifest %s of %s is not valid: %w", target, d.Digest, l, err)
	}
	cfg, err := l.readJSON(m.Config)
	if err != nil {
		return indexImage{}, fmt.Errorf("oci_image_index %s: %w", target, err)
	}
	p, err := configPlatform(cfg)
	if err != nil {
		return indexImage{}, fmt.Errorf("oci_image_index %s: config %s of %s: %w", target, m.Config.Digest, l, err)
	}
	mt := m.MediaType
	if mt == "" {
		mt = d.MediaType
	}
	img := indexImage{
		dir:   l,
		desc:  v1.Descriptor{MediaType: mt, Digest: d.Digest, Size: d.Size, Platform: p},
		blobs: append([]v1.Descriptor{{MediaType: mt, Digest: d.Digest, Size: d.Size}, m.Config}, m.Layers...),
	}
	return img, nil
}

// writeLayoutFiles starts the layout at out: oci-layout, index.json naming
// top, and the blob raw of top.
func writeLayoutFiles(out string, raw []byte, top v1.Descriptor) error {
	dir := filepath.Join(out, "blobs", top.Digest.Algorithm)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("failed to create layout %s: %w", out, err)
	}
	idx, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{top}})
	if err != nil {
		return fmt.Errorf("failed to encode index.json: %w", err)
	}
	files := map[string][]byte{
		filepath.Join(out, bundleformat.LayoutEntry): []byte(bundleformat.LayoutContent),
		filepath.Join(out, bundleformat.IndexEntry):  idx,
		filepath.Join(dir, top.Digest.Hex):           raw,
	}
	for p, data := range files {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return fmt.Errorf("failed to write %s: %w", p, err)
		}
	}
	return nil
}

// copyBlob copies the blob d from the layout src to out, checked against d.
// A blob already copied (a layer two images share) is written once.
func copyBlob(src layoutDir, out string, d v1.Descriptor) error {
	dst := filepath.Join(out, "blobs", d.Digest.Algorithm, d.Digest.Hex)
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	r, err := src.open(d)
	if err != nil {
		return err
	}
	defer r.Close()
	tmp := dst + ".partial"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", tmp, err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("failed to copy blob %s of %s: %w", d.Digest, src, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("failed to write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("failed to write %s: %w", dst, err)
	}
	return nil
}
