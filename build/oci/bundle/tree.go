package bundle

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
)

// PreseedDir is where bundles live in the appliance's root filesystem.
const PreseedDir = "/containerd/preseed"

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
	Name        string      `json:"name"`
	Compression Compression `json:"compression"`
	// File is the bundle on the build machine.
	File string `json:"file"`
}

// TreeEntry describes one placed bundle in the tree's manifest.
type TreeEntry struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Path is the bundle's absolute path in the appliance.
	Path        string      `json:"path"`
	Compression Compression `json:"compression"`
	Size        int64       `json:"size"`
	SHA256      string      `json:"sha256"`
	Info
}

// TreeManifest lists every bundle of a tree, sorted by path.
type TreeManifest struct {
	Bundles []TreeEntry `json:"bundles"`
}

// WriteTree writes a tar holding every input at
// containerd/preseed/<namespace>/<name><ext> (with its parent directories,
// mode 0755; files 0644; owner 0:0; fixed mtime; sorted) and returns the
// manifest of what it placed, encoded as JSON.
func WriteTree(w io.Writer, inputs []TreeInput) ([]byte, error) {
	entries := make([]TreeEntry, 0, len(inputs))
	seen := map[string]string{}
	for _, in := range inputs {
		if !validName(in.Namespace) {
			return nil, fmt.Errorf("bundle %s: invalid namespace %q", in.File, in.Namespace)
		}
		if !validName(in.Name) {
			return nil, fmt.Errorf("bundle %s: invalid bundle name %q", in.File, in.Name)
		}
		p := path.Join(PreseedDir, in.Namespace, in.Name+in.Compression.Ext())
		if other, dup := seen[p]; dup {
			return nil, fmt.Errorf("bundles %s and %s both go to %s", other, in.File, p)
		}
		seen[p] = in.File
		info, err := Inspect(in.File)
		if err != nil {
			return nil, err
		}
		size, sum, err := fileSum(in.File)
		if err != nil {
			return nil, err
		}
		entries = append(entries, TreeEntry{
			Namespace: in.Namespace, Name: in.Name, Path: p, Compression: in.Compression,
			Size: size, SHA256: sum, Info: *info,
		})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })

	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	for _, e := range entries {
		var parents []string
		for d := path.Dir(e.Path); d != "/"; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			hdr := &tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: mtime(), Format: tar.FormatPAX}
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, fmt.Errorf("failed to write directory %s: %w", d, err)
			}
		}
		if err := copyInto(tw, e.Path[1:], seen[e.Path], e.Size); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("failed to finish preseed tree: %w", err)
	}
	return marshalSorted(TreeManifest{Bundles: entries})
}

func copyInto(tw *tar.Writer, name, file string, size int64) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("failed to open bundle %s: %w", file, err)
	}
	defer f.Close()
	if err := tw.WriteHeader(header(name, size)); err != nil {
		return fmt.Errorf("failed to write %s: %w", name, err)
	}
	if _, err := io.CopyN(tw, f, size); err != nil {
		return fmt.Errorf("failed to copy bundle %s: %w", file, err)
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
