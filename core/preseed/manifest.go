package preseed

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// ManifestFile is the preseed manifest the build writes next to the bundles
// (//images:preseed.json); ManifestEntry is one bundle of it. Both are the
// format's own types (core/bundleformat), which the build writes with.
type (
	ManifestFile  = bundleformat.Manifest
	ManifestEntry = bundleformat.Entry
)

// manifest is a loaded, checked preseed manifest.
type manifest struct {
	// file is where it was read from, for errors.
	file    string
	byPath  map[string]*ManifestEntry
	byNSDir map[string]*ManifestEntry // namespace/file name
}

// loadManifest reads the manifest at file and checks it with the format's
// strict parser: every entry complete, none twice.
func loadManifest(file string) (*manifest, error) {
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
	m := &manifest{file: file, byPath: make(map[string]*ManifestEntry), byNSDir: make(map[string]*ManifestEntry)}
	for i := range mf.Bundles {
		e := &mf.Bundles[i]
		m.byPath[e.Path] = e
		m.byNSDir[e.Key()] = e
	}
	return m, nil
}

// entry finds the manifest's entry for a bundle file: by its path (in the
// appliance, where the manifest's paths are real), else by namespace and
// file name (a tree placed under another root, as in tests).
func (m *manifest) entry(b *bundle) (*ManifestEntry, error) {
	e := m.byPath[b.path]
	if e == nil {
		e = m.byNSDir[b.namespace+"/"+b.file]
	}
	if e == nil {
		return nil, fmt.Errorf("bundle %s is not in the preseed manifest %s", b.path, m.file)
	}
	return e, nil
}

// check compares what the metadata pass learnt of a bundle (its size and
// the digests of index.json and the JSON blobs, no layer) with its entry.
// It reports every difference at once, so one error tells the whole story.
func (m *manifest) check(b *bundle, e *ManifestEntry, size int64) error {
	var diffs []string
	differs := func(what string, is, want any) {
		diffs = append(diffs, fmt.Sprintf("%s is %v, the manifest says %v", what, is, want))
	}
	if b.namespace != e.Namespace {
		differs("namespace", b.namespace, e.Namespace)
	}
	if size != e.Size {
		differs("size", size, e.Size)
	}
	if d := digest.FromBytes(b.meta.Index); d != e.IndexDigest {
		differs("index.json digest", d, e.IndexDigest)
	}
	if len(b.meta.images) != 1 {
		var names []string
		for _, im := range b.meta.images {
			names = append(names, im.Name)
		}
		differs("images", strings.Join(names, ", "), e.Reference)
	} else {
		im := b.meta.images[0]
		if im.Name != e.Reference {
			differs("image name", im.Name, e.Reference)
		}
		if im.Target.Digest != e.Target.Digest || im.Target.Size != e.Target.Size || im.Target.MediaType != e.Target.MediaType {
			differs("target", descString(im.Target), descString(e.Target))
		}
		if missing := missingReferences(im, e.References); len(missing) > 0 {
			diffs = append(diffs, fmt.Sprintf("references %s are registered but not in the manifest's references %s",
				strings.Join(missing, ", "), strings.Join(e.References, ", ")))
		}
		known, complete := b.meta.manifestDigests(im)
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
			sort.Strings(extra)
			var listed []string
			for d := range want {
				listed = append(listed, d.String())
			}
			sort.Strings(listed)
			var is []string
			for d := range known {
				is = append(is, d.String())
			}
			sort.Strings(is)
			differs("manifests", strings.Join(is, ", "), strings.Join(listed, ", "))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("bundle %s differs from the preseed manifest %s: %s", b.path, m.file, strings.Join(diffs, "; "))
	}
	return nil
}

// missingReferences are the names preseed registers for im that listed
// lacks: the manifest must name every record the bundle makes.
func missingReferences(im imageRef, listed []string) []string {
	var out []string
	for _, n := range im.names() {
		if !slices.Contains(listed, n) {
			out = append(out, n)
		}
	}
	return out
}

func descString(d ocispec.Descriptor) string {
	return fmt.Sprintf("%s (%s, %d bytes)", d.Digest, d.MediaType, d.Size)
}

// manifestDigests lists the image manifests of im known from the JSON blobs
// read (of a narrowed index, those of its held platforms). complete is false when a nested index was not read (the metadata
// pass follows only this machine's platform), so only part is known.
func (m *metadata) manifestDigests(im imageRef) (map[digest.Digest]bool, bool) {
	out := make(map[digest.Digest]bool)
	complete := true
	var walk func(d ocispec.Descriptor)
	walk = func(d ocispec.Descriptor) {
		switch {
		case images.IsManifestType(d.MediaType):
			out[d.Digest] = true
		case images.IsIndexType(d.MediaType):
			b, ok := m.JSON[d.Digest]
			if !ok {
				complete = false
				return
			}
			var idx ocispec.Index
			if err := json.Unmarshal(b, &idx); err != nil {
				complete = false
				return
			}
			for _, c := range idx.Manifests {
				// A narrowed index holds only some platforms' manifests.
				if d.Digest == im.Target.Digest && im.Held != nil && (c.Platform == nil || !slices.Contains(im.Held, bundleformat.FormatPlatform(*c.Platform))) {
					continue
				}
				walk(c)
			}
		}
	}
	walk(im.Target)
	out[im.Manifest.Digest] = true
	return out, complete
}

// absent are the bundles the manifest lists that are not in the tree, each
// failed: the build placed them, so one missing means the images on this
// node are not the build's (a root copied half, a file removed at rest),
// and its images must not vanish without a failure.
func (m *manifest) absent(bundles []*bundle) []*bundle {
	present := make(map[*ManifestEntry]bool)
	for _, b := range bundles {
		if e, err := m.entry(b); err == nil {
			present[e] = true
		}
	}
	var out []*bundle
	for p, e := range m.byPath {
		if !present[e] {
			out = append(out, &bundle{
				namespace: e.Namespace, file: path.Base(p), path: p,
				err: fmt.Errorf("bundle %s is listed in the preseed manifest %s, but absent: its images are not on this node", p, m.file),
			})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}
