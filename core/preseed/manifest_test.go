package preseed_test

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/erofscache"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/preseed"
	"github.com/appliance-bundler/appliance/core/preseed/status"
	"github.com/appliance-bundler/appliance/tests/containerdtest"
	"github.com/appliance-bundler/appliance/tests/preseedtest"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// treeEntry describes a bundle file as the build's manifest does, with the
// build's own code (build/oci/bundle), so these tests check the importer
// against what the build writes, not against a copy of it.
func treeEntry(t *testing.T, file, namespace string) bundleformat.Entry {
	t.Helper()
	e, err := bundle.Inspect(file)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if e.Size, err = io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	base := filepath.Base(file)
	comp, ok := bundleformat.FromFileName(base)
	if !ok {
		t.Fatalf("%s is not named like a bundle", file)
	}
	e.Namespace, e.Name, e.Compression = namespace, strings.TrimSuffix(base, comp.Ext()), comp
	e.Path, e.SHA256 = path.Join(bundleformat.PreseedRoot, namespace, base), hex.EncodeToString(h.Sum(nil))
	return *e
}

// writeManifest writes the manifest of the named bundles of the fixture's
// namespace directory, as they are now, and returns its path.
func (f *fixture) writeManifest(files ...string) string {
	f.t.Helper()
	m := bundleformat.Manifest{Bundles: []bundleformat.Entry{}}
	for _, file := range files {
		m.Bundles = append(m.Bundles, treeEntry(f.t, filepath.Join(f.root, ns, file), ns))
	}
	return writeManifestFile(f.t, m)
}

// writeManifestFile encodes m into a preseed.json in a temporary
// directory and returns its path.
func writeManifestFile(t *testing.T, m bundleformat.Manifest) string {
	t.Helper()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "preseed.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) goodFiles() []string {
	var out []string
	for _, g := range f.good {
		out = append(out, g.file)
	}
	return out
}

// blobOffset is where the data of blob hex starts in a plain bundle.
func blobOffset(t *testing.T, file, hex string) int64 {
	t.Helper()
	fd, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	tr := tar.NewReader(fd)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("no blob %s in %s: %v", hex, file, err)
		}
		if hdr.Name == "blobs/sha256/"+hex {
			pos, _ := fd.Seek(0, io.SeekCurrent)
			return pos
		}
	}
}

// flipByte changes one byte of a file in place, keeping its size.
func flipByte(t *testing.T, file string, off int64) {
	t.Helper()
	fd, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	b := make([]byte, 1)
	if _, err := fd.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := fd.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// expectRefused checks that file failed with every one of reasons in its
// error, which also names the file, that none of names is registered, and
// that every good bundle is imported or skipped and correct.
func (f *fixture) expectRefused(st *status.Status, file string, reasons []string, names ...string) {
	f.t.Helper()
	b := bundleStatus(f.t, st, file)
	if b.Result != status.ResultFailed {
		f.t.Errorf("bundle %s: result %s, want failed", file, b.Result)
	}
	for _, r := range append([]string{filepath.Join(f.root, ns, file)}, reasons...) {
		if !strings.Contains(b.Error, r) {
			f.t.Errorf("bundle %s: error %q does not say %q", file, b.Error, r)
		}
	}
	if st.Failed != 1 || st.Imported+st.Skipped != len(f.good) {
		f.t.Errorf("status: %d imported, %d skipped, %d failed; want %d good and 1 failed", st.Imported, st.Skipped, st.Failed, len(f.good))
	}
	for _, n := range names {
		checkAbsent(f.t, f.cl, n)
	}
	f.checkGood(st)
}

// A bundle whose layer bytes changed after the build (same size) is
// refused and named; the others are imported.
func TestManifestChangedLayerByte(t *testing.T) {
	f := newFixture(t)
	bad := filepath.Join(f.root, ns, "bad.tar")
	write(t, bad, badEntries(t, badName))
	cfg := f.config()
	cfg.Manifest = f.writeManifest(append(f.goodFiles(), "bad.tar")...)
	before, _ := os.Stat(bad)
	flipByte(t, bad, firstLayerOffset(t, bad)+1000)
	if after, _ := os.Stat(bad); after.Size() != before.Size() {
		t.Fatalf("size changed: %d -> %d", before.Size(), after.Size())
	}
	st := f.run(cfg)
	// containerd's commit sees the layer's digest first; the rest of the
	// file is then hashed so the error also says what changed.
	f.expectRefused(st, "bad.tar", []string{"differs from the preseed manifest " + cfg.Manifest, "sha256 of the file is", "unexpected commit digest"}, badName)
	t.Logf("refused: %s", bundleStatus(t, st, "bad.tar").Error)
}

// A bundle whose changed bytes are in a layer the content store already
// has (from another bundle): containerd never reads that layer back, so
// only the whole-file sha256 of the manifest catches it.
func TestManifestChangedBytesOfStoredLayer(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.Manifest = f.writeManifest(f.goodFiles()...)

	// good-a.tar and good-b.tar.zst share the layer of seed 1. Import
	// good-b alone first, so the store has it.
	a := filepath.Join(f.root, ns, "good-a.tar")
	aside := filepath.Join(t.TempDir(), "good-a.tar")
	if err := os.Rename(a, aside); err != nil {
		t.Fatal(err)
	}
	// good-a.tar, listed but set aside, fails as absent.
	if st := f.run(cfg); st.Imported != 1 || st.Failed != 1 {
		t.Fatalf("first run (good-b only): %+v", st)
	}
	shared, err := preseedtest.RandomLayer(1, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := shared.Digest()
	flipByte(t, aside, blobOffset(t, aside, d.Hex)+1000)
	if err := os.Rename(aside, a); err != nil {
		t.Fatal(err)
	}

	st := f.run(cfg)
	b := bundleStatus(t, st, "good-a.tar")
	if b.Result != status.ResultFailed {
		t.Fatalf("good-a.tar with a changed byte: %+v", b)
	}
	for _, want := range []string{a, cfg.Manifest, "sha256 of the file is"} {
		if !strings.Contains(b.Error, want) {
			t.Errorf("error %q does not say %q", b.Error, want)
		}
	}
	checkAbsent(t, f.cl, "preseed.test/good-a:1.0")
	if bs := bundleStatus(t, st, "good-b.tar.zst"); bs.Result != status.ResultSkipped {
		t.Errorf("good-b.tar.zst: %+v", bs)
	}
	g := f.good["preseed.test/good-b:1.0"]
	checkImage(t, f.cl, f.d.Snapshotter, "preseed.test/good-b:1.0", g.digest, g.file)
	t.Logf("refused: %s", b.Error)

	// The control: without the manifest the same file imports, so the
	// refusal above is the manifest's doing.
	if st := f.run(f.config()); bundleStatus(t, st, "good-a.tar").Result != status.ResultImported {
		t.Errorf("without a manifest good-a.tar was not imported: %+v", st.Bundles)
	}
}

func TestManifestUnlistedBundle(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.Manifest = f.writeManifest(f.goodFiles()...)
	write(t, filepath.Join(f.root, ns, "extra.tar"), badEntries(t, badName))
	st := f.run(cfg)
	f.expectRefused(st, "extra.tar", []string{"not in the preseed manifest", cfg.Manifest}, badName)
}

// A bundle the manifest lists that is not in the tree (a root copied in
// part, a file removed at rest) fails, naming its path and the manifest;
// the bundles present are imported.
func TestManifestAbsentBundleFails(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	gone := f.goodFiles()[0]
	cfg.Manifest = f.writeManifest(f.goodFiles()...)
	if err := os.Remove(filepath.Join(f.root, ns, gone)); err != nil {
		t.Fatal(err)
	}
	st := f.run(cfg)
	if st.Failed != 1 || st.Imported != len(f.goodFiles())-1 {
		t.Fatalf("status %+v, want %s failed and the others imported", st, gone)
	}
	b := bundleStatus(t, st, gone)
	want := path.Join(bundleformat.PreseedRoot, ns, gone)
	if b.Result != status.ResultFailed || !strings.Contains(b.Error, want) || !strings.Contains(b.Error, cfg.Manifest) || !strings.Contains(b.Error, "absent") {
		t.Errorf("%s: %s %q, want failed naming %s, the manifest and that it is absent", gone, b.Result, b.Error, want)
	}
}

// A valid bundle put in place of another under its file name, naming the
// same image, is refused for its digests.
func TestManifestSwappedBundle(t *testing.T) {
	f := newFixture(t)
	swap := filepath.Join(f.root, ns, "swap.tar")
	write(t, swap, badEntries(t, badName))
	cfg := f.config()
	cfg.Manifest = f.writeManifest(append(f.goodFiles(), "swap.tar")...)
	if _, err := preseedtest.WriteBundle(swap, preseedtest.Image{Name: badName, Image: image(t, 700, 512<<10, 128<<10)}); err != nil {
		t.Fatal(err)
	}
	st := f.run(cfg)
	f.expectRefused(st, "swap.tar", []string{"differs from the preseed manifest " + cfg.Manifest, "index.json digest is", "target is", "manifests is"}, badName)
	t.Logf("refused: %s", bundleStatus(t, st, "swap.tar").Error)

	// Another image under the file name: the name differs too.
	if _, err := preseedtest.WriteBundle(swap, preseedtest.Image{Name: "preseed.test/other:1.0", Image: image(t, 800, 64<<10)}); err != nil {
		t.Fatal(err)
	}
	st = f.run(cfg)
	f.expectRefused(st, "swap.tar", []string{"image name is preseed.test/other:1.0, the manifest says " + badName, "size is"}, badName, "preseed.test/other:1.0")
}

// A manifest that is missing or not a manifest refuses every bundle, naming
// the manifest; nothing is imported.
func TestManifestInvalid(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	good := f.writeManifest(f.goodFiles()...)
	var noSum bundleformat.Manifest
	raw, _ := os.ReadFile(good)
	if err := json.Unmarshal(raw, &noSum); err != nil {
		t.Fatal(err)
	}
	noSum.Bundles[0].SHA256 = ""
	noSumJSON, _ := json.Marshal(noSum)
	for _, c := range []struct {
		name, content, reason string
	}{
		{"missing", "", "no such file"},
		{"not JSON", `{"bundles": [`, "not valid JSON"},
		{"no bundles", `{}`, `no "bundles" list`},
		{"unknown field", `{"bundles": [], "images": []}`, `unknown field "images"`},
		{"data after the object", `{"bundles": []} {}`, "data after the JSON value"},
		{"entry without sha256", string(noSumJSON), "is not 64 lowercase hex digits"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".json")
			if c.content != "" {
				if err := os.WriteFile(p, []byte(c.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cfg := f.config()
			cfg.Manifest = p
			st := f.run(cfg)
			if st.Failed != len(f.good) || st.Imported != 0 || st.Skipped != 0 {
				t.Errorf("status: %d imported, %d skipped, %d failed; want every bundle failed", st.Imported, st.Skipped, st.Failed)
			}
			for _, b := range st.Bundles {
				if b.Result != status.ResultFailed || !strings.Contains(b.Error, p) || !strings.Contains(b.Error, c.reason) {
					t.Errorf("bundle %s: %s %q; want failed naming %s and %q", b.File, b.Result, b.Error, p, c.reason)
				}
			}
			for name := range f.good {
				checkAbsent(t, f.cl, name)
			}
		})
	}
	// The same bundles with the good manifest import: the failures above
	// were the manifest's.
	cfg := f.config()
	cfg.Manifest = good
	st := f.run(cfg)
	if st.Imported != len(f.good) || st.Failed != 0 {
		t.Fatalf("with a good manifest: %+v", st)
	}
	f.checkGood(st)
}

// With a matching manifest everything imports (hashed whole), and a second
// run skips without reading the layers, as without one.
func TestManifestMatchingSecondRunSkips(t *testing.T) {
	f := newFixture(t)
	// Plain, zstd and gzip: the whole-file sum is of the compressed file.
	f.addGood("good-c.tar.gz", "preseed.test/good-c:1.0", image(t, 60, 128<<10))
	c := &countingOpen{bytes: map[string]*atomic.Int64{}}
	cfg := f.config()
	cfg.Manifest = f.writeManifest(f.goodFiles()...)
	cfg.Open = c.open
	first := f.run(cfg)
	if first.Imported != 3 || first.Failed != 0 {
		t.Fatalf("first run: %+v", first)
	}
	f.checkGood(first)
	plain := filepath.Join(f.root, ns, "good-a.tar")
	size, _ := os.Stat(plain)
	// The import read every byte (to hash it), on top of the metadata pass.
	if got := c.bytes["good-a.tar"].Load(); got < size.Size() {
		t.Errorf("first run read %d bytes of good-a.tar, less than its %d", got, size.Size())
	}
	t.Logf("bytes read on the first run: good-a.tar %d of %d", c.bytes["good-a.tar"].Load(), size.Size())

	c = &countingOpen{bytes: map[string]*atomic.Int64{}}
	cfg.Open = c.open
	second := f.run(cfg)
	if second.Skipped != 3 || second.Imported != 0 || second.Failed != 0 {
		t.Fatalf("second run: %+v", second)
	}
	f.checkGood(second)
	limit := firstLayerOffset(t, plain)
	if got := c.bytes["good-a.tar"].Load(); got == 0 || got > limit {
		t.Errorf("second run read %d bytes of good-a.tar; its first layer starts at byte %d", got, limit)
	}
	zst, _ := os.Stat(filepath.Join(f.root, ns, "good-b.tar.zst"))
	if got := c.bytes["good-b.tar.zst"].Load(); got == 0 || got > zst.Size()/2 {
		t.Errorf("second run read %d bytes of good-b.tar.zst (%d bytes)", got, zst.Size())
	}
	t.Logf("bytes read on the second run: good-a.tar %d (layers start at %d), good-b.tar.zst %d of %d",
		c.bytes["good-a.tar"].Load(), limit, c.bytes["good-b.tar.zst"].Load(), zst.Size())
}

// The manifest the build writes (//images:preseed.json) accepts the tree
// the build writes (//images:preseed.tar: slim bundles and the EROFS layer
// content cache), placed under another root here: every image imports into
// erofs from the cache, with the appliance's setting for sidecars (the
// tree has none: the system partition's dm-verity covers the cache). A
// bundle swapped for another is refused.
func TestManifestFromImageRules(t *testing.T) {
	manifest := runfile.Path(t, "PRESEED_JSON")
	tree := extractTree(t, runfile.Path(t, "PRESEED_TAR"))
	cache := filepath.Join(tree, strings.TrimPrefix(erofscache.Root, "/"))
	d := containerdtest.StartConfig(t, containerdtest.NewErofsConfig(t, cache))
	cl := d.Client(t)
	bundles := filepath.Join(tree, strings.TrimPrefix(bundleformat.PreseedRoot, "/"))
	run := func() *status.Status {
		t.Helper()
		cfg := preseed.Config{Root: bundles, Address: d.Address, Snapshotter: d.Snapshotter,
			StatusPath: filepath.Join(t.TempDir(), "status.json"), Manifest: manifest,
			CacheDirs: []string{cache}, RequireVerity: node.RequireVerity}
		st, err := cfg.Preseed(t.Context(), zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	st := run()
	if st.Imported != 3 || st.Failed != 0 {
		t.Fatalf("status %+v", st)
	}
	var helloDigest string
	for _, b := range st.Bundles {
		for _, im := range b.Images {
			checkTreeImage(t, cl, cache, im.Name, im.Digest, b.File)
			if b.File == "hello.tar" {
				helloDigest = im.Digest
			}
		}
	}

	pause, err := os.ReadFile(filepath.Join(bundles, ns, "pause.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundles, ns, "hello.tar"), pause, 0o644); err != nil {
		t.Fatal(err)
	}
	st = run()
	b := bundleStatus(t, st, "hello.tar")
	if b.Result != status.ResultFailed || !strings.Contains(b.Error, "image name is localhost/appliance/pause:1.0, the manifest says docker.io/library/hello:1.0") {
		t.Errorf("pause bundle as hello.tar: %+v", b)
	}
	if len(st.Unpinned) != 0 {
		t.Errorf("a refused bundle got images unpinned: %+v", st.Unpinned)
	}
	// The image hello.tar made is still there and pinned: a swapped bundle
	// must not get the good image collected.
	checkTreeImage(t, cl, cache, "docker.io/library/hello:1.0", helloDigest, "hello.tar")
}

// A manifest entry whose references lack a name preseed registers is
// refused like any other difference, naming the missing name.
func TestManifestReferencesMissing(t *testing.T) {
	f := newFixture(t)
	bad := filepath.Join(f.root, ns, "bad.tar")
	write(t, bad, badEntries(t, badName))
	cfg := f.config()
	cfg.Manifest = f.writeManifest(append(f.goodFiles(), "bad.tar")...)
	raw, err := os.ReadFile(cfg.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundleformat.ParseManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	var dropped string
	for i := range m.Bundles {
		if e := &m.Bundles[i]; e.Reference == badName {
			dropped = e.References[len(e.References)-1]
			e.References = e.References[:len(e.References)-1]
		}
	}
	if !strings.Contains(dropped, "@sha256:") {
		t.Fatalf("dropped %q, want the digest name", dropped)
	}
	if raw, err = m.Encode(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.Manifest, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	st := f.run(cfg)
	f.expectRefused(st, "bad.tar", []string{"differs from the preseed manifest " + cfg.Manifest, "references " + dropped + " are registered but not in the manifest's references"}, badName, dropped)
	t.Logf("refused: %s", bundleStatus(t, st, "bad.tar").Error)
}
