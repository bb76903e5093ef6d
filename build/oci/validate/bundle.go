package validate

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// BundleResult is what a valid bundle holds.
type BundleResult struct {
	*Result
	// Reference is the name both index.json annotations carry.
	Reference string
	// Entries are the tar's entry names in order.
	Entries []string
}

// Bundle checks a bundle file against docs/bundle-format.md: regular files
// only, mode 0644, owner 0:0 without names, a fixed mtime, the entry order,
// the exact oci-layout, one index.json descriptor with both name
// annotations (and a platform for a manifest), no unreferenced blobs, and
// then the extracted layout with Layout. scratch is an empty directory.
func Bundle(path, scratch string) (*BundleResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open bundle %s: %w", path, err)
	}
	defer f.Close()
	rc, err := bundle.Decompress(f)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	defer rc.Close()

	var names []string
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("bundle %s: failed to read tar: %w", path, err)
		}
		if err := checkHeader(hdr); err != nil {
			return nil, fmt.Errorf("bundle %s: entry %s: %w", path, hdr.Name, err)
		}
		names = append(names, hdr.Name)
		dst := filepath.Join(scratch, filepath.FromSlash(hdr.Name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, fmt.Errorf("failed to extract bundle %s: %w", path, err)
		}
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: entry %s: %w (given twice?)", path, hdr.Name, err)
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("failed to extract %s of bundle %s: %w", hdr.Name, path, err)
		}
	}
	if len(names) < 2 || names[0] != bundleformat.LayoutEntry || names[1] != bundleformat.IndexEntry {
		return nil, fmt.Errorf("bundle %s: must start with oci-layout then index.json, has %v", path, head(names))
	}
	if data, _ := os.ReadFile(filepath.Join(scratch, bundleformat.LayoutEntry)); string(data) != bundleformat.LayoutContent {
		return nil, fmt.Errorf("bundle %s: oci-layout is %q, want %q", path, data, bundleformat.LayoutContent)
	}
	res, err := Layout(scratch)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	ref, err := checkIndex(res)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	if err := checkOrder(names[2:], res); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	return &BundleResult{Result: res, Reference: ref, Entries: names}, nil
}

func head(s []string) []string {
	if len(s) > 3 {
		return s[:3]
	}
	return s
}

// checkHeader adds the writers' duties (mode, owner, mtime) to the entry
// rules every reader applies.
func checkHeader(hdr *tar.Header) error {
	if err := bundleformat.CheckEntry(hdr); err != nil {
		return err
	}
	if hdr.Mode != bundleformat.EntryMode {
		return fmt.Errorf("mode %o, want %o", hdr.Mode, bundleformat.EntryMode)
	}
	if hdr.Uid != 0 || hdr.Gid != 0 || hdr.Uname != "" || hdr.Gname != "" {
		return fmt.Errorf("owner %d:%d (%q:%q), want 0:0 without names", hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname)
	}
	if !hdr.ModTime.Equal(bundleformat.ModTime()) {
		return fmt.Errorf("mtime %s, want %s", hdr.ModTime, bundleformat.ModTime())
	}
	return nil
}

func checkIndex(res *Result) (string, error) {
	if len(res.Index) != 1 {
		return "", fmt.Errorf("index.json names %d images, want 1", len(res.Index))
	}
	d := res.Index[0]
	ref := d.Annotations[bundleformat.AnnotationImageName]
	if ref == "" || d.Annotations[bundleformat.AnnotationRefName] != ref {
		return "", fmt.Errorf("index.json descriptor must carry the same reference in %s and %s, has %q and %q",
			bundleformat.AnnotationImageName, bundleformat.AnnotationRefName, ref, d.Annotations[bundleformat.AnnotationRefName])
	}
	if norm, err := bundle.NormalizeReference(ref); err != nil || norm != ref {
		return "", fmt.Errorf("index.json names %q, which is not a fully normalised reference (%q, %v)", ref, norm, err)
	}
	if bundleformat.IsManifest(d.MediaType) && d.Platform == nil {
		return "", fmt.Errorf("index.json descriptor of manifest %s has no platform", d.Digest)
	}
	return ref, nil
}

// checkOrder checks that the blobs are exactly the reachable ones, the
// metadata blobs sorted before the layers, both sorted.
func checkOrder(blobNames []string, res *Result) error {
	var want, meta, layers []string
	for dg, mt := range res.Blobs {
		p := bundleformat.BlobPrefix + strings.TrimPrefix(dg, "sha256:")
		if bundleformat.IsJSON(mt) {
			meta = append(meta, p)
		} else {
			layers = append(layers, p)
		}
	}
	sort.Strings(meta)
	sort.Strings(layers)
	want = append(meta, layers...)
	got, _ := json.Marshal(blobNames)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		return fmt.Errorf("blob entries are %s, want exactly the reachable blobs, metadata then layers, each sorted: %s", got, exp)
	}
	return nil
}
