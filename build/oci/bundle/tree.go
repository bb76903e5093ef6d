package bundle

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/erofscache"
)

// validName restricts namespaces and bundle names to what containerd
// accepts as a namespace and to safe file names: [A-Za-z0-9][A-Za-z0-9._-]*.
func validName(s string) bool {
	for i, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || (r != '.' && r != '_' && r != '-')) {
			return false
		}
	}
	return s != ""
}

// TreeInput is one bundle to place in the tree.
type TreeInput struct {
	Namespace string `json:"namespace"`
	// Name is the file name without extension; Compression picks the
	// extension.
	Name        string                   `json:"name"`
	Compression bundleformat.Compression `json:"compression"`
	// File is the bundle on the build machine.
	File string `json:"file"`
	// ErofsCache places the bundle slim, its layers in the tree's EROFS
	// layer content cache (TreeCache); without it the bundle is placed
	// whole and the node converts its layers.
	ErofsCache bool `json:"erofs_cache"`
}

// TreeCache converts bundles' layers into an EROFS layer content cache for
// WriteTree (build/oci/erofs does the work; this package must not).
type TreeCache struct {
	// Dir is the cache directory Convert fills; its files go into the tree
	// under erofscache.Root.
	Dir string
	// Convert writes to slimOut the bundle file in without the layers it
	// converts into Dir, and returns them (Path relative to Dir, in layer
	// order).
	Convert func(ctx context.Context, in, slimOut string) ([]bundleformat.CachedLayer, error)
}

// treeFile is one regular file of the tree tar.
type treeFile struct {
	src  string
	size int64
}

// WriteTree is WriteTreeCached without an EROFS cache: no input may have
// ErofsCache.
func WriteTree(w io.Writer, inputs []TreeInput) ([]byte, error) {
	return WriteTreeCached(context.Background(), w, inputs, nil)
}

// WriteTreeCached writes a tar holding every input at
// containerd/preseed/<namespace>/<name><ext> and, for the inputs with
// ErofsCache, their layers' EROFS blobs (without dm-verity sidecars: see
// cacheLayers) at containerd/erofs-cache/<erofscache.RelPath> (with parent
// directories, mode 0755; files 0644; owner 0:0; fixed mtime; sorted), and
// returns the
// preseed manifest of what it placed, encoded (bundleformat.Manifest). A
// bundle with ErofsCache is placed slim (bundleformat.AnnotationCachedLayers)
// and its manifest entry lists its cached layers; its size and sha256 are
// the slim file's. cache may be nil when no input has ErofsCache.
func WriteTreeCached(ctx context.Context, w io.Writer, inputs []TreeInput, cache *TreeCache) ([]byte, error) {
	entries := make([]bundleformat.Entry, 0, len(inputs))
	files := map[string]treeFile{}
	for i, in := range inputs {
		p, err := treePath(in, files)
		if err != nil {
			return nil, err
		}
		file := in.File
		var cached []bundleformat.CachedLayer
		if in.ErofsCache {
			if cache == nil {
				return nil, fmt.Errorf("bundle %s: erofs_cache set, but no EROFS cache given", in.File)
			}
			file = filepath.Join(cache.Dir, fmt.Sprintf(".slim-%d%s", i, in.Compression.Ext()))
			if cached, err = cacheLayers(ctx, cache, in.File, file, files); err != nil {
				return nil, err
			}
		}
		e, err := Inspect(file)
		if err != nil {
			return nil, err
		}
		if e.Size, e.SHA256, err = fileSum(file); err != nil {
			return nil, err
		}
		e.Namespace, e.Name, e.Path, e.Compression, e.CachedLayers = in.Namespace, in.Name, p, in.Compression, cached
		entries = append(entries, *e)
		files[p] = treeFile{src: file, size: e.Size}
	}
	if err := writeTreeTar(w, files); err != nil {
		return nil, err
	}
	m := bundleformat.Manifest{Bundles: entries}
	return m.Encode()
}

// treePath checks an input and returns its path in the appliance.
func treePath(in TreeInput, files map[string]treeFile) (string, error) {
	if !validName(in.Namespace) {
		return "", fmt.Errorf("bundle %s: invalid namespace %q", in.File, in.Namespace)
	}
	if !validName(in.Name) {
		return "", fmt.Errorf("bundle %s: invalid bundle name %q", in.File, in.Name)
	}
	if _, err := bundleformat.ParseCompression(string(in.Compression)); err != nil {
		return "", fmt.Errorf("bundle %s: %w", in.File, err)
	}
	p := path.Join(bundleformat.PreseedRoot, in.Namespace, in.Name+in.Compression.Ext())
	if other, dup := files[p]; dup {
		return "", fmt.Errorf("bundles %s and %s both go to %s", other.src, in.File, p)
	}
	return p, nil
}

// cacheLayers converts a bundle's layers and adds their blobs to files (a
// layer shared with another bundle once), returning the manifest's cached
// layers with their paths in the appliance.
//
// The blobs' dm-verity sidecars are left out on purpose: the cache sits on
// the system partition, whose own dm-verity checks every block of a blob
// as it is read. Without a sidecar, containerd's erofs snapshotter (mode
// "auto", core/node.DmverityMode) mounts a blob straight from its file,
// with no loop device and no second hash check (see core/node for the
// measurement).
func cacheLayers(ctx context.Context, cache *TreeCache, in, slim string, files map[string]treeFile) ([]bundleformat.CachedLayer, error) {
	cached, err := cache.Convert(ctx, in, slim)
	if err != nil {
		return nil, err
	}
	for i := range cached {
		rel := cached[i].Path
		src := filepath.Join(cache.Dir, filepath.FromSlash(rel))
		fi, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: cache entry of layer %s: %w", in, cached[i].Digest, err)
		}
		cached[i].Path = path.Join(erofscache.Root, rel)
		files[cached[i].Path] = treeFile{src: src, size: fi.Size()}
	}
	return cached, nil
}

// writeTreeTar writes files (by absolute path) sorted, each after its
// parent directories.
func writeTreeTar(w io.Writer, files map[string]treeFile) error {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	for _, p := range paths {
		var parents []string
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			hdr := &tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: bundleformat.ModTime(), Format: tar.FormatPAX}
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("failed to write directory %s: %w", d, err)
			}
		}
		if err := copyInto(tw, p[1:], files[p].src, files[p].size); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("failed to finish preseed tree: %w", err)
	}
	return nil
}

func copyInto(tw *tar.Writer, name, file string, size int64) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", file, err)
	}
	defer f.Close()
	if err := tw.WriteHeader(bundleformat.Header(name, size)); err != nil {
		return fmt.Errorf("failed to write %s: %w", name, err)
	}
	if _, err := io.CopyN(tw, f, size); err != nil {
		return fmt.Errorf("failed to copy %s: %w", file, err)
	}
	return nil
}

func fileSum(file string) (int64, string, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, "", fmt.Errorf("failed to open bundle %s: %w", file, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("failed to hash bundle %s: %w", file, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
