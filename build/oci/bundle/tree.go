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

	"github.com/appliance-bundler/appliance/core/bundleformat"
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
}

// WriteTree writes a tar holding every input at
// containerd/preseed/<namespace>/<name><ext> (with its parent directories,
// mode 0755; files 0644; owner 0:0; fixed mtime; sorted) and returns the
// preseed manifest of what it placed, encoded (bundleformat.Manifest).
func WriteTree(w io.Writer, inputs []TreeInput) ([]byte, error) {
	entries := make([]bundleformat.Entry, 0, len(inputs))
	seen := map[string]string{}
	for _, in := range inputs {
		if !validName(in.Namespace) {
			return nil, fmt.Errorf("bundle %s: invalid namespace %q", in.File, in.Namespace)
		}
		if !validName(in.Name) {
			return nil, fmt.Errorf("bundle %s: invalid bundle name %q", in.File, in.Name)
		}
		if _, err := bundleformat.ParseCompression(string(in.Compression)); err != nil {
			return nil, fmt.Errorf("bundle %s: %w", in.File, err)
		}
		p := path.Join(bundleformat.PreseedRoot, in.Namespace, in.Name+in.Compression.Ext())
		if other, dup := seen[p]; dup {
			return nil, fmt.Errorf("bundles %s and %s both go to %s", other, in.File, p)
		}
		seen[p] = in.File
		e, err := Inspect(in.File)
		if err != nil {
			return nil, err
		}
		if e.Size, e.SHA256, err = fileSum(in.File); err != nil {
			return nil, err
		}
		e.Namespace, e.Name, e.Path, e.Compression = in.Namespace, in.Name, p, in.Compression
		entries = append(entries, *e)
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
			hdr := &tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: bundleformat.ModTime(), Format: tar.FormatPAX}
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
	m := bundleformat.Manifest{Bundles: entries}
	return m.Encode()
}

func copyInto(tw *tar.Writer, name, file string, size int64) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("failed to open bundle %s: %w", file, err)
	}
	defer f.Close()
	if err := tw.WriteHeader(bundleformat.Header(name, size)); err != nil {
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
