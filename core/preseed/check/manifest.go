// Package check decides, before preseed writes anything, whether a bundle
// file may be imported: it compares what core/preseed/bundlefile read of
// the bundle with the bundle's entry in the preseed manifest (the build's
// record of every bundle it placed), and finds each layer the bundle leaves
// to the EROFS layer content cache in the cache's directories, with its
// dm-verity sidecar.
//
// Every error names the bundle file, the manifest when one is involved,
// and each thing that differs, all at once. The package reads the manifest,
// the cache's entries and their sidecars, and nothing else: it must not
// read layers, write anything, or talk to containerd.
package check

import (
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/preseed/bundlefile"
)

// Manifest is a loaded, checked preseed manifest.
type Manifest struct {
	// file is where it was read from, for errors.
	file    string
	byPath  map[string]*bundleformat.Entry
	byNSDir map[string]*bundleformat.Entry // namespace/file name
}

// LoadManifest reads the manifest at file and checks it with the format's
// strict parser: every entry complete, none twice.
func LoadManifest(file string) (*Manifest, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("failed to read the preseed manifest %s: %w", file, err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, bundleformat.MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read the preseed manifest %s: %w", file, err)
	}
	mf, err := bundleformat.ParseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("the preseed manifest %s: %w", file, err)
	}
	m := &Manifest{file: file, byPath: make(map[string]*bundleformat.Entry), byNSDir: make(map[string]*bundleformat.Entry)}
	for i := range mf.Bundles {
		e := &mf.Bundles[i]
		m.byPath[e.Path] = e
		m.byNSDir[e.Key()] = e
	}
	return m, nil
}

// File is where the manifest was read from.
func (m *Manifest) File() string { return m.file }

// Len is how many bundles the manifest lists.
func (m *Manifest) Len() int { return len(m.byPath) }

// Entry finds the manifest's entry for a bundle file: by its path (in the
// appliance, where the manifest's paths are real), else by namespace and
// file name (a tree placed under another root, as in tests).
func (m *Manifest) Entry(f bundlefile.File) (*bundleformat.Entry, error) {
	e := m.byPath[f.Path]
	if e == nil {
		e = m.byNSDir[f.Namespace+"/"+f.FileName]
	}
	if e == nil {
		return nil, fmt.Errorf("bundle %s is not in the preseed manifest %s", f.Path, m.file)
	}
	return e, nil
}

// Check compares what the metadata pass learnt of a bundle (its size and
// the digests of index.json and the JSON blobs, no layer) with its entry e.
func (m *Manifest) Check(f bundlefile.File, e *bundleformat.Entry, meta *bundlefile.Metadata, size int64) error {
	var d differences
	if f.Namespace != e.Namespace {
		d.field("namespace", f.Namespace, e.Namespace)
	}
	if size != e.Size {
		d.field("size", size, e.Size)
	}
	if got := digest.FromBytes(meta.Index); got != e.IndexDigest {
		d.field("index.json digest", got, e.IndexDigest)
	}
	if len(meta.Unpacked) != 1 {
		var names []string
		for _, im := range meta.Unpacked {
			names = append(names, im.Name)
		}
		d.field("images", strings.Join(names, ", "), e.Reference)
	} else {
		d.image(e, meta, meta.Unpacked[0])
	}
	return m.differ(f, d)
}

// differences collects what differs between a bundle and its manifest
// entry, so that one error tells the whole story (Manifest.differ).
type differences []string

// field records a field whose value is not the entry's.
func (d *differences) field(what string, is, want any) {
	d.add("%s is %v, the manifest says %v", what, is, want)
}

func (d *differences) add(format string, a ...any) {
	*d = append(*d, fmt.Sprintf(format, a...))
}

// differ is the error of a bundle that differs from its entry, or nil.
func (m *Manifest) differ(f bundlefile.File, d differences) error {
	if len(d) == 0 {
		return nil
	}
	return fmt.Errorf("bundle %s differs from the preseed manifest %s: %s", f.Path, m.file, strings.Join(d, "; "))
}

// image compares a bundle's one image with its entry.
func (d *differences) image(e *bundleformat.Entry, meta *bundlefile.Metadata, im bundlefile.Image) {
	if im.Name != e.Reference {
		d.field("image name", im.Name, e.Reference)
	}
	if im.Target.Digest != e.Target.Digest || im.Target.Size != e.Target.Size || im.Target.MediaType != e.Target.MediaType {
		d.field("target", descString(im.Target), descString(e.Target))
	}
	if missing := missingReferences(im, e.References); len(missing) > 0 {
		d.add("references %s are registered but not in the manifest's references %s",
			strings.Join(missing, ", "), strings.Join(e.References, ", "))
	}
	known, complete := meta.ManifestDigests(im)
	want := make(map[digest.Digest]bool)
	for _, x := range e.Manifests {
		want[x.Digest] = true
	}
	var extra []string
	for d := range known {
		if !want[d] {
			extra = append(extra, d.String())
		}
	}
	if len(extra) > 0 || (complete && len(known) != len(want)) {
		d.field("manifests", sortedDigests(known), sortedDigests(want))
	}
}

// sortedDigests joins a digest set in order, so errors come out the same
// every time.
func sortedDigests(set map[digest.Digest]bool) string {
	var out []string
	for d := range set {
		out = append(out, d.String())
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// missingReferences are the names preseed registers for im that listed
// lacks: the manifest must name every record the bundle makes.
func missingReferences(im bundlefile.Image, listed []string) []string {
	var out []string
	for _, n := range im.Names() {
		if !slices.Contains(listed, n) {
			out = append(out, n)
		}
	}
	return out
}

func descString(d ocispec.Descriptor) string {
	return fmt.Sprintf("%s (%s, %d bytes)", d.Digest, d.MediaType, d.Size)
}

// Absent is a bundle the manifest lists that is not in the tree.
type Absent struct {
	File bundlefile.File
	// Err says so, naming the file and the manifest.
	Err error
}

// Absent lists the bundles the manifest lists that present lacks, by
// path. The build placed them, so one missing means the images on this
// node are not the build's (a root copied half, a file removed at rest),
// and its images must not vanish without a failure.
func (m *Manifest) Absent(present []bundlefile.File) []Absent {
	found := make(map[*bundleformat.Entry]bool)
	for _, f := range present {
		if e, err := m.Entry(f); err == nil {
			found[e] = true
		}
	}
	var out []Absent
	for p, e := range m.byPath {
		if !found[e] {
			out = append(out, Absent{
				File: bundlefile.File{Namespace: e.Namespace, FileName: path.Base(p), Path: p},
				Err:  fmt.Errorf("bundle %s is listed in the preseed manifest %s, but absent: its images are not on this node", p, m.file),
			})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File.Path < out[j].File.Path })
	return out
}

// CheckSum compares the hex sha256 of a whole bundle file, hashed as it
// was imported, with its entry e. It catches changed bytes containerd's own
// digest checks cannot see: a blob the content store already has is never
// read back, and tar headers are never hashed.
func (m *Manifest) CheckSum(f bundlefile.File, e *bundleformat.Entry, sum string) error {
	var d differences
	if sum != e.SHA256 {
		d.add("sha256 of the file is %s, the manifest says %s (its bytes changed after the build)", sum, e.SHA256)
	}
	return m.differ(f, d)
}
