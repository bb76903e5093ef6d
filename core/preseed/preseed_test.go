package preseed_test

import (
	"archive/tar"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/preseed"
	"github.com/appliance-bundler/appliance/core/preseed/bundlefile"
	"github.com/appliance-bundler/appliance/core/preseed/status"
	"github.com/appliance-bundler/appliance/core/supervisor"
	"github.com/appliance-bundler/appliance/tests/containerdtest"
	"github.com/appliance-bundler/appliance/tests/preseedtest"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

const ns = "k8s.io"

// guard bounds every wait; it is never the expected duration.
const guard = 3 * time.Minute

// fixture is a preseed tree with two good bundles (one plain, one zstd)
// beside whatever a test adds, and a containerd to import into.
type fixture struct {
	t      *testing.T
	root   string
	status string
	d      *containerdtest.Daemon
	cl     *client.Client
	good   map[string]goodImage // image name -> expectation
}

type goodImage struct {
	file   string
	digest string
	// img is set for the fixture's own images.
	img v1.Image
}

func image(t *testing.T, seed uint64, sizes ...int64) v1.Image {
	t.Helper()
	img, err := preseedtest.RandomImage(seed, sizes...)
	if err != nil {
		t.Fatalf("failed to make image: %v", err)
	}
	return img
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, root: t.TempDir(), good: map[string]goodImage{}}
	f.status = filepath.Join(t.TempDir(), "status.json")
	f.d = containerdtest.Start(t)
	f.cl = f.d.Client(t)
	if err := os.MkdirAll(filepath.Join(f.root, ns), 0o755); err != nil {
		t.Fatal(err)
	}
	// Two images sharing a base layer (seed 1), in two bundles.
	a := image(t, 1, 256<<10, 64<<10)
	b, err := preseedtest.RandomImage(1, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := preseedtest.RandomLayer(50, 96<<10)
	if err != nil {
		t.Fatal(err)
	}
	bl, _ := b.Layers()
	b, err = preseedtest.NewImage(append(bl, l2)...)
	if err != nil {
		t.Fatal(err)
	}
	f.addGood("good-a.tar", "preseed.test/good-a:1.0", a)
	f.addGood("good-b.tar.zst", "preseed.test/good-b:1.0", b)
	return f
}

func (f *fixture) addGood(file, name string, img v1.Image) {
	f.t.Helper()
	if _, err := preseedtest.WriteBundle(filepath.Join(f.root, ns, file), preseedtest.Image{Name: name, Image: img}); err != nil {
		f.t.Fatal(err)
	}
	f.good[name] = goodImage{file: file, digest: digestOf(f.t, img), img: img}
}

// badEntries returns the entries of a bundle of one image, for a test to
// break.
func badEntries(t *testing.T, name string) []preseedtest.Entry {
	t.Helper()
	e, err := preseedtest.Entries(preseedtest.Image{Name: name, Image: image(t, 100, 512<<10, 128<<10)})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func write(t *testing.T, path string, entries []preseedtest.Entry) {
	t.Helper()
	if _, err := preseedtest.Write(path, entries); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) config() preseed.Config {
	return preseed.Config{Root: f.root, Address: f.d.Address, Snapshotter: f.d.Snapshotter, StatusPath: f.status}
}

func (f *fixture) run(cfg preseed.Config) *status.Status {
	f.t.Helper()
	return f.runWith(cfg, zaptest.NewLogger(f.t))
}

// runWith is run with a logger of the test's.
func (f *fixture) runWith(cfg preseed.Config, logger *zap.Logger) *status.Status {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	st, err := cfg.Preseed(ctx, logger)
	if err != nil {
		f.t.Fatalf("preseed failed: %v", err)
	}
	// The status file is what the E2E reads: check it says the same.
	b, err := os.ReadFile(f.status)
	if err != nil {
		f.t.Fatalf("no status file: %v", err)
	}
	var fromFile status.Status
	if err := json.Unmarshal(b, &fromFile); err != nil {
		f.t.Fatalf("status file is not JSON: %v", err)
	}
	if fromFile.State != "done" || fromFile.Failed != st.Failed || fromFile.Imported != st.Imported || len(fromFile.Bundles) != len(st.Bundles) {
		f.t.Fatalf("status file %s disagrees with the result", b)
	}
	return &fromFile
}

func bundleStatus(t *testing.T, st *status.Status, file string) status.Bundle {
	t.Helper()
	for _, b := range st.Bundles {
		if b.File == file {
			return b
		}
	}
	t.Fatalf("no status for bundle %s in %+v", file, st.Bundles)
	return status.Bundle{}
}

// checkGood asserts every good image is registered with its digest, pinned,
// labelled with its bundle, with its content present and unpacked.
func (f *fixture) checkGood(st *status.Status) {
	f.t.Helper()
	for name, g := range f.good {
		if r := bundleStatus(f.t, st, g.file).Result; r != status.ResultImported && r != status.ResultSkipped {
			f.t.Errorf("good bundle %s: result %s", g.file, r)
		}
		checkImage(f.t, f.cl, f.d.Snapshotter, name, g.digest, g.file)
	}
}

// checkImage asserts that image name and its digest names (repo@digest,
// and for an index repo@ the unpacked manifest) are registered, point to
// digest (the manifest), are pinned and labelled with file, and that the
// image is unpacked and its layers present.
func checkImage(t *testing.T, cl *client.Client, snapshotter, name, digest, file string) {
	t.Helper()
	img, ok := checkRegistered(t, cl, snapshotter, name, digest, file)
	if !ok {
		return
	}
	ctx := namespaces.WithNamespace(context.Background(), ns)
	m, err := images.Manifest(ctx, cl.ContentStore(), img.Target(), platforms.DefaultStrict())
	if err != nil {
		t.Errorf("image %s: manifest: %v", name, err)
		return
	}
	for _, l := range m.Layers {
		if _, err := cl.ContentStore().Info(ctx, l.Digest); err != nil {
			t.Errorf("image %s: layer %s: %v", name, l.Digest, err)
		}
	}
}

// checkRegistered asserts what checkImage does but the layers' presence,
// and returns the image (false if it is not registered).
func checkRegistered(t *testing.T, cl *client.Client, snapshotter, name, digest, file string) (client.Image, bool) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	img, err := cl.ImageService().Get(ctx, name)
	if err != nil {
		t.Errorf("image %s: %v", name, err)
		return nil, false
	}
	if img.Target.Digest.String() != digest {
		t.Errorf("image %s: target %s, want %s", name, img.Target.Digest, digest)
	}
	for ref, want := range wantNames(t, cl, img) {
		checkRecord(t, cl, ref, want, file)
	}
	ci := client.NewImageWithPlatform(cl, img, platforms.DefaultStrict())
	if ok, err := ci.IsUnpacked(ctx, snapshotter); err != nil || !ok {
		t.Errorf("image %s: unpacked into %s = %v, %v", name, snapshotter, ok, err)
	}
	return ci, true
}

func checkAbsent(t *testing.T, cl *client.Client, name string) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		t.Fatalf("image name %s: %v", name, err)
	}
	imgs, err := cl.ImageService().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// No record at all: not its tag, nor any digest name of its repository.
	for _, img := range imgs {
		if img.Name == name || strings.HasPrefix(img.Name, named.Name()+"@") {
			t.Errorf("record %s of the failed bundle of %s is registered: %+v", img.Name, name, img.Target)
		}
	}
}

// expectFailed checks a bad bundle failed with a reason naming the problem,
// left nothing registered under its name, and the good bundles are fine.
func (f *fixture) expectFailed(file, reason string, names ...string) {
	f.t.Helper()
	st := f.run(f.config())
	b := bundleStatus(f.t, st, file)
	if b.Result != status.ResultFailed || !strings.Contains(b.Error, reason) {
		f.t.Errorf("bundle %s: result %s, error %q; want failed with %q", file, b.Result, b.Error, reason)
	}
	if b.Namespace != ns {
		f.t.Errorf("bundle %s: namespace %q", file, b.Namespace)
	}
	if st.Failed < 1 || st.Imported+st.Skipped != len(f.good) {
		f.t.Errorf("status: %d imported, %d failed; want %d imported", st.Imported, st.Failed, len(f.good))
	}
	for _, n := range names {
		checkAbsent(f.t, f.cl, n)
	}
	f.checkGood(st)
}

func (f *fixture) expectIgnored(path, reason string) {
	f.t.Helper()
	st := f.run(f.config())
	found := false
	for _, ig := range st.Ignored {
		if ig.Path == path && strings.Contains(ig.Reason, reason) {
			found = true
		}
	}
	if !found {
		f.t.Errorf("%s not reported as ignored with %q: %+v", path, reason, st.Ignored)
	}
	if st.Failed != 0 || st.Imported+st.Skipped != 2 {
		f.t.Errorf("status: %d imported, %d failed", st.Imported, st.Failed)
	}
	f.checkGood(st)
}

const badName = "preseed.test/bad:1.0"

func TestGoodBundles(t *testing.T) {
	f := newFixture(t)
	// A gzip bundle of two images.
	c, d := image(t, 300, 128<<10), image(t, 310, 64<<10, 64<<10)
	if _, err := preseedtest.WriteBundle(filepath.Join(f.root, ns, "pair.tar.gz"),
		preseedtest.Image{Name: "preseed.test/c:1", Image: c}, preseedtest.Image{Name: "preseed.test/d:1", Image: d}); err != nil {
		t.Fatal(err)
	}
	f.good["preseed.test/c:1"] = goodImage{file: "pair.tar.gz", digest: digestOf(t, c)}
	f.good["preseed.test/d:1"] = goodImage{file: "pair.tar.gz", digest: digestOf(t, d)}
	st := f.run(f.config())
	if st.Imported != 3 || st.Failed != 0 || st.Skipped != 0 {
		t.Fatalf("status %+v", st)
	}
	f.checkGood(st)
}

func TestTruncatedTar(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.root, ns, "bad.tar")
	write(t, p, badEntries(t, badName))
	st, _ := os.Stat(p)
	// Cut inside the last layer's data.
	if err := os.Truncate(p, st.Size()-64<<10); err != nil {
		t.Fatal(err)
	}
	f.expectFailed("bad.tar", "truncated", badName)
}

func TestFlippedByteInLayer(t *testing.T) {
	f := newFixture(t)
	e := badEntries(t, badName)
	for i := range e {
		if e[i].Layer {
			d := append([]byte(nil), e[i].Data...)
			d[len(d)/2] ^= 0x01
			e[i].Data = d
			break
		}
	}
	write(t, filepath.Join(f.root, ns, "bad.tar"), e)
	f.expectFailed("bad.tar", "unexpected commit digest", badName)
}

func without(e []preseedtest.Entry, drop func(preseedtest.Entry) bool) []preseedtest.Entry {
	var out []preseedtest.Entry
	for _, x := range e {
		if !drop(x) {
			out = append(out, x)
		}
	}
	return out
}

func TestMissingIndex(t *testing.T) {
	f := newFixture(t)
	e := without(badEntries(t, badName), func(x preseedtest.Entry) bool { return x.Header.Name == "index.json" })
	write(t, filepath.Join(f.root, ns, "bad.tar"), e)
	f.expectFailed("bad.tar", "missing index.json", badName)
}

func TestMissingBlob(t *testing.T) {
	f := newFixture(t)
	dropped := false
	e := without(badEntries(t, badName), func(x preseedtest.Entry) bool {
		if x.Layer && !dropped {
			dropped = true
			return true
		}
		return false
	})
	write(t, filepath.Join(f.root, ns, "bad.tar"), e)
	f.expectFailed("bad.tar", "missing blob", badName)
}

func extra(h tar.Header, data []byte) preseedtest.Entry {
	h.Size = int64(len(data))
	h.Mode = 0o644
	h.Format = tar.FormatPAX
	return preseedtest.Entry{Header: h, Data: data}
}

func TestDotDotEntry(t *testing.T) {
	f := newFixture(t)
	e := append(badEntries(t, badName), extra(tar.Header{Typeflag: tar.TypeReg, Name: "../escape"}, []byte("x")))
	write(t, filepath.Join(f.root, ns, "bad.tar"), e)
	f.expectFailed("bad.tar", "escapes the bundle", badName)
}

func TestSymlinkEntry(t *testing.T) {
	f := newFixture(t)
	e := badEntries(t, badName)
	// Right after index.json, where an exporter might link a blob.
	link := extra(tar.Header{Typeflag: tar.TypeSymlink, Name: "blobs/sha256/" + strings.Repeat("a", 64), Linkname: "/etc/passwd"}, nil)
	e = append(e[:2], append([]preseedtest.Entry{link}, e[2:]...)...)
	write(t, filepath.Join(f.root, ns, "bad.tar"), e)
	f.expectFailed("bad.tar", "symlink", badName)
}

func TestNoRefName(t *testing.T) {
	f := newFixture(t)
	e := badEntries(t, badName)
	var idx v1.IndexManifest
	if err := json.Unmarshal(e[1].Data, &idx); err != nil {
		t.Fatal(err)
	}
	for i := range idx.Manifests {
		idx.Manifests[i].Annotations = nil
	}
	b, _ := json.Marshal(idx)
	e[1].Data, e[1].Header.Size = b, int64(len(b))
	write(t, filepath.Join(f.root, ns, "bad.tar"), e)
	f.expectFailed("bad.tar", "has no image name", badName)
}

func TestTwoBundlesOneName(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.root, ns, "dup-1.tar"), badEntries(t, badName))
	if _, err := preseedtest.WriteBundle(filepath.Join(f.root, ns, "dup-2.tar"),
		preseedtest.Image{Name: badName, Image: image(t, 200, 64<<10)}); err != nil {
		t.Fatal(err)
	}
	f.expectFailed("dup-1.tar", "also named by dup-2.tar", badName)
	st := f.run(f.config())
	if b := bundleStatus(t, st, "dup-2.tar"); b.Result != status.ResultFailed || !strings.Contains(b.Error, "also named by dup-1.tar") {
		t.Errorf("dup-2.tar: %+v", b)
	}
}

func TestEmptyFile(t *testing.T) {
	f := newFixture(t)
	if err := os.WriteFile(filepath.Join(f.root, ns, "bad.tar.gz"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.root, ns, "bad.tar"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f.expectFailed("bad.tar", "empty bundle")
	f.expectFailed("bad.tar.gz", "not gzip")
}

func TestNotATar(t *testing.T) {
	f := newFixture(t)
	junk := []byte(strings.Repeat("this is not a tar archive\n", 100))
	if err := os.WriteFile(filepath.Join(f.root, ns, "bad.tar"), junk, 0o644); err != nil {
		t.Fatal(err)
	}
	f.expectFailed("bad.tar", "broken tar")
}

func TestPlainFileInRoot(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.root, "stray.tar")
	write(t, p, badEntries(t, badName))
	f.expectIgnored(p, "not a namespace directory")
	checkAbsent(t, f.cl, badName)
}

func TestNotABundleInNamespace(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.root, ns, "README.txt")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.expectIgnored(p, "not a bundle")
}

func TestInvalidNamespace(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(f.root, "Not_A.Namespace!")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "bad.tar"), badEntries(t, badName))
	f.expectIgnored(dir, "invalid namespace name")
}

// Tests run as root, which reads any file whatever its mode, so "unreadable"
// is made real in ways root cannot read past either: a FIFO (opening it
// for reading would block until a writer comes, which never happens), a
// directory, and a dangling symlink (a bundle missing from the image).
func TestUnreadableFIFO(t *testing.T) {
	f := newFixture(t)
	if err := syscall.Mkfifo(filepath.Join(f.root, ns, "bad.tar"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.expectFailed("bad.tar", "not a regular file")
}

func TestUnreadableDirectory(t *testing.T) {
	f := newFixture(t)
	if err := os.Mkdir(filepath.Join(f.root, ns, "bad.tar.zst"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.expectFailed("bad.tar.zst", "not a regular file")
}

func TestUnreadableDanglingSymlink(t *testing.T) {
	f := newFixture(t)
	if err := os.Symlink("/nonexistent/bundle.tar", filepath.Join(f.root, ns, "bad.tar")); err != nil {
		t.Fatal(err)
	}
	f.expectFailed("bad.tar", "no such file")
}

// countingOpen wraps bundlefile.Open and counts the bytes read per file;
// seeks (tar skipping an entry) are not reads.
type countingOpen struct {
	mu    sync.Mutex
	bytes map[string]*atomic.Int64
}

type countedFile struct {
	*os.File
	n *atomic.Int64
}

func (c countedFile) Read(p []byte) (int, error) {
	n, err := c.File.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingOpen) open(path string) (io.ReadCloser, error) {
	f, err := bundlefile.Open(path)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bytes[filepath.Base(path)] == nil {
		c.bytes[filepath.Base(path)] = new(atomic.Int64)
	}
	return countedFile{File: f, n: c.bytes[filepath.Base(path)]}, nil
}

// firstLayerOffset is where the first layer's data starts in a plain bundle.
func firstLayerOffset(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var pos int64
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("no layer in %s: %v", path, err)
		}
		pos, _ = f.Seek(0, io.SeekCurrent)
		// Layers are the only large blobs of the fixture.
		if strings.HasPrefix(hdr.Name, "blobs/") && hdr.Size > 32<<10 {
			return pos
		}
	}
}

func TestSecondRunSkipsWithoutReadingLayers(t *testing.T) {
	f := newFixture(t)
	first := f.run(f.config())
	if first.Imported != 2 || first.Failed != 0 {
		t.Fatalf("first run: %+v", first)
	}
	f.checkGood(first)

	c := &countingOpen{bytes: map[string]*atomic.Int64{}}
	cfg := f.config()
	cfg.Open = c.open
	start := time.Now()
	second := f.run(cfg)
	t.Logf("second run took %v", time.Since(start))
	if second.Skipped != 2 || second.Imported != 0 || second.Failed != 0 {
		t.Fatalf("second run: %+v", second)
	}
	f.checkGood(second)
	plain := filepath.Join(f.root, ns, "good-a.tar")
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

func TestUnpinWhenBundleGone(t *testing.T) {
	f := newFixture(t)
	f.run(f.config())
	if err := os.Remove(filepath.Join(f.root, ns, "good-a.tar")); err != nil {
		t.Fatal(err)
	}
	st := f.run(f.config())
	// Every name of the gone bundle's image: its tag and its digest.
	gone := []string{"preseed.test/good-a:1.0", "preseed.test/good-a@" + f.good["preseed.test/good-a:1.0"].digest}
	var unpinned []string
	for _, u := range st.Unpinned {
		unpinned = append(unpinned, u.Name)
	}
	if !slices.Equal(unpinned, gone) {
		t.Fatalf("unpinned %+v, want %q", st.Unpinned, gone)
	}
	ctx := namespaces.WithNamespace(context.Background(), ns)
	for _, n := range gone {
		img, err := f.cl.ImageService().Get(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := img.Labels[preseed.LabelPinned]; ok {
			t.Errorf("image %s still pinned: %v", n, img.Labels)
		}
	}
	checkImage(t, f.cl, f.d.Snapshotter, "preseed.test/good-b:1.0", f.good["preseed.test/good-b:1.0"].digest, "good-b.tar.zst")
}

// killingFile kills containerd once, after a bundle file has been read past
// a point only the layer ingest reaches (the metadata pass reads a few KiB).
type killingFile struct {
	*os.File
	n    int64
	kill func()
}

func (k *killingFile) Read(p []byte) (int, error) {
	n, err := k.File.Read(p)
	k.n += int64(n)
	if k.n > 1<<20 {
		k.kill()
	}
	return n, err
}

// pidOf finds the process started with --config path.
func pidOf(t *testing.T, configPath string) int {
	t.Helper()
	want := "--config\x00" + configPath + "\x00"
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), want) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				return pid
			}
		}
	}
	return 0
}

func TestRestartAfterContainerdKilledDuringImport(t *testing.T) {
	root := t.TempDir()
	statusPath := filepath.Join(t.TempDir(), "status.json")
	if err := os.MkdirAll(filepath.Join(root, ns), 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[string]goodImage{}
	for i, file := range []string{"one.tar", "two.tar.zst", "three.tar.gz"} {
		name := "preseed.test/restart-" + strings.Split(file, ".")[0] + ":1"
		img := image(t, uint64(1000+10*i), 4<<20, 2<<20)
		if _, err := preseedtest.WriteBundle(filepath.Join(root, ns, file), preseedtest.Image{Name: name, Image: img}); err != nil {
			t.Fatal(err)
		}
		want[name] = goodImage{file: file, digest: digestOf(t, img)}
	}

	ccfg := containerdtest.NewConfig(t)
	var once sync.Once
	var killedPID atomic.Int64
	kill := func() {
		once.Do(func() {
			pid := pidOf(t, ccfg.ConfigPath)
			if pid == 0 {
				t.Errorf("containerd process not found")
				return
			}
			killedPID.Store(int64(pid))
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Errorf("failed to kill containerd: %v", err)
			}
		})
	}
	pcfg := preseed.Config{
		Root: root, Address: ccfg.Address, Snapshotter: ccfg.Snapshotter, StatusPath: statusPath,
		Open: func(p string) (io.ReadCloser, error) {
			f, err := bundlefile.Open(p)
			if err != nil {
				return nil, err
			}
			return &killingFile{File: f, kill: kill}, nil
		},
	}
	ccfg.Children = map[string]supervisor.Runnable{"preseed": pcfg.Run}

	type event struct {
		name  string
		state supervisor.State
	}
	events := make(chan event, 10000)
	ctx, cancel := context.WithCancel(context.Background())
	sup := supervisor.New(ctx, zaptest.NewLogger(t), func(ctx context.Context) error {
		if err := supervisor.Run(ctx, "containerd", ccfg.Run); err != nil {
			return err
		}
		supervisor.Signal(ctx, supervisor.SignalHealthy)
		supervisor.Signal(ctx, supervisor.SignalDone)
		return nil
	}, supervisor.WithBackoff(50*time.Millisecond, time.Second), supervisor.WithObserver(func(name string, st supervisor.State) {
		select {
		case events <- event{name, st}:
		default:
		}
	}))
	defer func() {
		cancel()
		sup.Wait()
	}()

	containerdFailed := false
	timeout := time.After(guard)
wait:
	for {
		select {
		case e := <-events:
			if e.name == "root.containerd" && e.state == supervisor.StateFailed {
				containerdFailed = true
			}
			if e.name == "root.containerd.preseed" && e.state == supervisor.StateDone {
				break wait
			}
		case <-timeout:
			t.Fatalf("preseed not done after %v; states %v", guard, sup.States())
		}
	}
	if killedPID.Load() == 0 {
		t.Fatal("containerd was never killed: the test did not test a restart")
	}
	if !containerdFailed {
		t.Error("the supervisor never saw containerd fail")
	}
	if pid := pidOf(t, ccfg.ConfigPath); pid == 0 || int64(pid) == killedPID.Load() {
		t.Errorf("containerd was not restarted (pid %d, killed %d)", pid, killedPID.Load())
	}

	b, err := os.ReadFile(statusPath)
	if err != nil {
		t.Fatal(err)
	}
	var st status.Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if st.Failed != 0 || st.Imported+st.Skipped != 3 {
		t.Errorf("status after restart: %s", b)
	}
	cl, err := client.New(ccfg.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for name, g := range want {
		checkImage(t, cl, ccfg.Snapshotter, name, g.digest, g.file)
	}
}

// The bundles the image rules (//images) build import as they are: the
// format is one contract on both sides.
func TestImageRuleBundles(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, ns), 0o755); err != nil {
		t.Fatal(err)
	}
	for env, file := range map[string]string{"HELLO_BUNDLE": "hello.tar", "PAUSE_BUNDLE": "pause.tar"} {
		// A symlink to the runfile: bundles may be links to regular files.
		if err := os.Symlink(runfile.Path(t, env), filepath.Join(root, ns, file)); err != nil {
			t.Fatal(err)
		}
	}
	d := containerdtest.Start(t)
	cl := d.Client(t)
	cfg := preseed.Config{Root: root, Address: d.Address, Snapshotter: d.Snapshotter, StatusPath: filepath.Join(t.TempDir(), "status.json")}
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	st, err := cfg.Preseed(ctx, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Imported != 2 || st.Failed != 0 {
		t.Fatalf("status %+v", st)
	}
	// What each must be is the build's word, not preseed's: the preseed
	// manifest the image rules wrote (//images:preseed.json) gives its
	// name, target and references (hello, an index: its tag, its index
	// digest and its linux/amd64 manifest's; pause: its tag and digest).
	built := builtEntries(t)
	for _, b := range st.Bundles {
		e, ok := built[b.File]
		if !ok || len(b.Images) != 1 {
			t.Errorf("bundle %s: images %+v; the build's manifest has it: %v", b.File, b.Images, ok)
			continue
		}
		im := b.Images[0]
		if im.Name != e.Reference || im.Digest != e.Target.Digest.String() || !slices.Equal(slices.Sorted(slices.Values(im.References)), slices.Sorted(slices.Values(e.References))) {
			t.Errorf("bundle %s registered %s at %s as %q; the build says %s at %s as %q",
				b.File, im.Name, im.Digest, im.References, e.Reference, e.Target.Digest, e.References)
		}
		checkImage(t, cl, d.Snapshotter, e.Reference, e.Target.Digest.String(), b.File)
		checkCRI(t, criClient(t, d.Address), e.Reference, slices.DeleteFunc(slices.Clone(e.References), func(r string) bool { return r == e.Reference })...)
	}
	if n := len(built["hello.tar"].References); n != 3 {
		t.Errorf("the build lists %d references for hello, an index: want its tag and two digest names", n)
	}
}

// builtEntries are the build's preseed manifest entries, by file name.
func builtEntries(t *testing.T) map[string]bundleformat.Entry {
	t.Helper()
	data, err := os.ReadFile(runfile.Path(t, "PRESEED_JSON"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundleformat.ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]bundleformat.Entry)
	for _, e := range m.Bundles {
		out[filepath.Base(e.Path)] = e
	}
	return out
}
