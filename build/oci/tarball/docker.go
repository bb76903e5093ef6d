package tarball

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// hexName matches a file name that is a sha256 digest, possibly with
// extensions (blobs/sha256/<hex>, <hex>.json, <hex>.tar.gz, sha256:<hex>).
const hexName = `^(sha256:)?[0-9a-f]{64}(\..*)?$`

// loadDocker converts one image of a docker-save tarball. It reads
// manifest.json with go-containerregistry's types but not its
// tarball.Image: that one gzips uncompressed layers (changing their
// digests), re-reads the tarball for every blob and cannot select by image
// ID or list what a tarball holds.
func loadDocker(a *archive, sel selector, lp layout.Path) (*Result, error) {
	data, _, err := a.readSmall("manifest.json", maxJSON)
	if err != nil {
		return nil, err
	}
	var m tarball.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest.json is not a docker-save manifest: %w", err)
	}
	var cands []candidate
	for i, e := range m {
		cf, err := a.lookup(e.Config)
		if err != nil {
			return nil, fmt.Errorf("manifest.json entry %d: config: %w", i, err)
		}
		cands = append(cands, candidate{id: cf.digest, digests: []digest.Digest{cf.digest}, names: e.RepoTags})
	}
	i, err := choose(sel, cands, "one of its RepoTags, or its image ID sha256:...")
	if err != nil {
		return nil, fmt.Errorf("manifest.json %w", err)
	}
	return convert(a, m[i], lp)
}

// checkNamed refuses a file whose name is a digest it does not have.
func checkNamed(name string, f file) error {
	base := path.Base(name)
	if ok, _ := regexp.MatchString(hexName, base); !ok {
		return nil
	}
	if want := "sha256:" + strings.SplitN(strings.TrimPrefix(base, "sha256:"), ".", 2)[0]; f.digest.String() != want {
		return fmt.Errorf("%q does not match its digest: it has %s", name, f.digest)
	}
	return nil
}

func convert(a *archive, e tarball.Descriptor, lp layout.Path) (*Result, error) {
	if len(e.LayerSources) > 0 {
		return nil, fmt.Errorf("image %s has foreign layers (LayerSources), which are not supported", e.Config)
	}
	cfgData, cfgFile, err := a.readSmall(e.Config, maxJSON)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := checkNamed(e.Config, cfgFile); err != nil {
		return nil, err
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(cfgData))
	if err != nil {
		return nil, fmt.Errorf("config %q is not an image config: %w", e.Config, err)
	}
	if len(cf.RootFS.DiffIDs) != len(e.Layers) {
		return nil, fmt.Errorf("image %s lists %d layers, its config %d diff_ids", e.Config, len(e.Layers), len(cf.RootFS.DiffIDs))
	}
	mf := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: cfgFile.size, Digest: hash(cfgFile.digest)},
	}
	if err := writeBlob(a, lp, e.Config, mf.Config, "config"); err != nil {
		return nil, err
	}
	for i, name := range e.Layers {
		d, err := dockerLayer(a, name, cf.RootFS.DiffIDs[i])
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if err := writeBlob(a, lp, name, d, "layer"); err != nil {
			return nil, err
		}
		mf.Layers = append(mf.Layers, d)
	}
	raw, err := json.Marshal(mf)
	if err != nil {
		return nil, fmt.Errorf("failed to encode the manifest: %w", err)
	}
	dg := digest.FromBytes(raw)
	d := v1.Descriptor{MediaType: mf.MediaType, Size: int64(len(raw)), Digest: hash(dg), Platform: cf.Platform()}
	if err := lp.WriteBlob(d.Digest, io.NopCloser(bytes.NewReader(raw))); err != nil {
		return nil, fmt.Errorf("failed to write the manifest: %w", err)
	}
	if err := lp.AppendDescriptor(d); err != nil {
		return nil, fmt.Errorf("failed to write index.json of %s: %w", lp, err)
	}
	return &Result{Digest: dg, MediaType: string(d.MediaType)}, nil
}

func hash(d digest.Digest) v1.Hash {
	return v1.Hash{Algorithm: d.Algorithm().String(), Hex: d.Encoded()}
}

// dockerLayer describes a layer file as it is (plain, gzip or zstd, told by
// its magic bytes) after checking its uncompressed content against diffID.
func dockerLayer(a *archive, name string, diffID v1.Hash) (v1.Descriptor, error) {
	f, err := a.lookup(name)
	if err != nil {
		return v1.Descriptor{}, err
	}
	if err := checkNamed(name, f); err != nil {
		return v1.Descriptor{}, err
	}
	r, err := os.Open(f.path)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("failed to read %q: %w", name, err)
	}
	defer r.Close()
	br := bufio.NewReader(r)
	head, _ := br.Peek(len(zstdMagic))
	d := v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: f.size, Digest: hash(f.digest)}
	var ur io.Reader = br
	switch {
	case bytes.HasPrefix(head, []byte(gzipMagic)):
		gr, err := gzip.NewReader(br)
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("%q: corrupt gzip compression: %w", name, err)
		}
		defer gr.Close()
		d.MediaType, ur = types.OCILayer, gr
	case bytes.HasPrefix(head, []byte(zstdMagic)):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("%q: corrupt zstd compression: %w", name, err)
		}
		defer zr.Close()
		d.MediaType, ur = types.OCILayerZStd, zr
	}
	h := sha256.New()
	if _, err := io.Copy(h, ur); err != nil {
		return v1.Descriptor{}, fmt.Errorf("%q: corrupt compression: %w", name, err)
	}
	if got := digest.NewDigest(digest.SHA256, h); got.String() != diffID.String() {
		return v1.Descriptor{}, fmt.Errorf("%q does not match its digest: its content is %s, the config's diff_id says %s", name, got, diffID)
	}
	return d, nil
}
