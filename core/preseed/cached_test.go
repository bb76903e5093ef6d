package preseed_test

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/appliance-bundler/appliance/build/oci/erofs"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/erofscache"
	"github.com/appliance-bundler/appliance/core/preseed"
	"github.com/appliance-bundler/appliance/core/preseed/status"
	"github.com/appliance-bundler/appliance/tests/containerdtest"
	"github.com/appliance-bundler/appliance/tests/preseedtest"
)

// The erofs snapshotter's labels on a snapshot served from the layer
// content cache (containerd's plugins/snapshots/erofs/blobsource.go).
const (
	labelBlobSource = "io.containerd.erofs.v1/blob.source"
	labelBlobRef    = "io.containerd.erofs.v1/blob.ref"
)

// cachedFixture is a containerd with the erofs snapshotter serving cache,
// and a preseed tree.
type cachedFixture struct {
	*fixture
	cache string
}

func newCachedFixture(t *testing.T) *cachedFixture {
	t.Helper()
	f := &fixture{t: t, root: t.TempDir(), good: map[string]goodImage{}}
	f.status = filepath.Join(t.TempDir(), "status.json")
	cache := t.TempDir()
	f.d = containerdtest.StartConfig(t, containerdtest.NewErofsConfig(t, cache))
	f.cl = f.d.Client(t)
	if err := os.MkdirAll(filepath.Join(f.root, ns), 0o755); err != nil {
		t.Fatal(err)
	}
	return &cachedFixture{fixture: f, cache: cache}
}

// addSlim writes a whole bundle of name, converts its layers into cache
// with the build's converter and puts the slim bundle in the tree.
func (f *cachedFixture) addSlim(file, name, cache string, seed uint64) ([]erofs.Entry, string) {
	f.t.Helper()
	img := image(f.t, seed, 256<<10, 64<<10)
	whole := filepath.Join(f.t.TempDir(), "whole.tar")
	if _, err := preseedtest.WriteBundle(whole, preseedtest.Image{Name: name, Image: img}); err != nil {
		f.t.Fatal(err)
	}
	entries, err := erofs.CacheBundle(context.Background(), whole, filepath.Join(f.root, ns, file), cache)
	if err != nil {
		f.t.Fatalf("failed to build the cache of %s: %v", file, err)
	}
	if len(entries) != 2 {
		f.t.Fatalf("%s: %d cache entries, want 2", file, len(entries))
	}
	return entries, digestOf(f.t, img)
}

func (f *cachedFixture) config() preseed.Config {
	cfg := f.fixture.config()
	cfg.CacheDirs = []string{f.cache}
	cfg.RequireVerity = true
	return cfg
}

// checkCachedImage asserts that name is registered and pinned, unpacked
// into erofs with every layer's snapshot served from the cache entry
// (staged, not converted), and that no layer blob reached the content
// store: containerd read no layer.
func (f *cachedFixture) checkCachedImage(name string, entries []erofs.Entry) {
	f.t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	img, err := f.cl.ImageService().Get(ctx, name)
	if err != nil {
		f.t.Fatalf("image %s: %v", name, err)
	}
	if img.Labels[preseed.LabelPinned] != preseed.PinnedValue {
		f.t.Errorf("image %s is not pinned: %v", name, img.Labels)
	}
	ci := client.NewImageWithPlatform(f.cl, img, platforms.DefaultStrict())
	if ok, err := ci.IsUnpacked(ctx, "erofs"); err != nil || !ok {
		f.t.Errorf("image %s: unpacked into erofs = %v, %v", name, ok, err)
	}
	var diffIDs []digest.Digest
	for _, e := range entries {
		diffIDs = append(diffIDs, e.DiffID)
		if _, err := f.cl.ContentStore().Info(ctx, e.Digest); !errdefs.IsNotFound(err) {
			f.t.Errorf("image %s: cached layer %s is in the content store (%v)", name, e.Digest, err)
		}
	}
	sn := f.cl.SnapshotService("erofs")
	for i, chain := range identity.ChainIDs(diffIDs) {
		info, err := sn.Stat(ctx, chain.String())
		if err != nil {
			f.t.Errorf("image %s: snapshot of layer %d: %v", name, i, err)
			continue
		}
		want := erofscache.BlobPath(f.cache, entries[i].DiffID)
		if info.Labels[labelBlobSource] != "cache" || info.Labels[labelBlobRef] != want {
			f.t.Errorf("image %s: snapshot %s labels %v; want served from the cache entry %s", name, chain, info.Labels, want)
		}
	}
}

// checkConverted asserts that every layer snapshot of name was converted
// on the node (containerd's erofs differ), not served from the cache.
func (f *cachedFixture) checkConverted(name string) {
	f.t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	img, err := f.cl.ImageService().Get(ctx, name)
	if err != nil {
		f.t.Fatalf("image %s: %v", name, err)
	}
	diffIDs, err := client.NewImageWithPlatform(f.cl, img, platforms.DefaultStrict()).RootFS(ctx)
	if err != nil {
		f.t.Fatalf("image %s: %v", name, err)
	}
	for i, chain := range identity.ChainIDs(diffIDs) {
		info, err := f.cl.SnapshotService("erofs").Stat(ctx, chain.String())
		if err != nil || info.Labels[labelBlobSource] != "" {
			f.t.Errorf("image %s: snapshot of layer %d (%v): labels %v; want one converted on the node", name, i, err, info.Labels)
		}
	}
}

// Slim bundles import from the layer content cache without any layer read;
// a whole bundle still imports into erofs (containerd's differ converts
// it); a missing cache entry and a missing sidecar each fail only their
// bundle, naming the bundle, the layer, its diffID and the missing path;
// a second run skips; and after containerd restarts, the CRI knows the
// cached image again with nothing done for it: its startup check
// (images.Check) counts absent layer blobs as missing but loads the image
// all the same.
func TestCachedBundles(t *testing.T) {
	f := newCachedFixture(t)
	slim, slimDigest := f.addSlim("slim.tar", "preseed.test/slim:1", f.cache, 1)
	whole := image(t, 20, 256<<10, 64<<10)
	f.addGood("whole.tar", "preseed.test/whole:1", whole)
	// Its cache entries are built elsewhere: the cache lacks them.
	nocache, _ := f.addSlim("nocache.tar", "preseed.test/nocache:1", t.TempDir(), 30)
	nosidecar, _ := f.addSlim("nosidecar.tar", "preseed.test/nosidecar:1", f.cache, 40)
	noSidecarBlob := erofscache.BlobPath(f.cache, nosidecar[1].DiffID)
	if err := os.Remove(erofscache.SidecarPath(noSidecarBlob)); err != nil {
		t.Fatal(err)
	}

	c := &countingOpen{bytes: map[string]*atomic.Int64{}}
	cfg := f.config()
	cfg.Open = c.open
	st := f.run(cfg)
	if st.Imported != 2 || st.Failed != 2 {
		t.Errorf("first run: %+v", st)
	}
	for file, want := range map[string][]string{
		"nocache.tar": {filepath.Join(f.root, ns, "nocache.tar"), nocache[0].Digest.String(), nocache[0].DiffID.String(),
			erofscache.BlobPath(f.cache, nocache[0].DiffID), "not in the EROFS layer content cache"},
		"nosidecar.tar": {filepath.Join(f.root, ns, "nosidecar.tar"), nosidecar[1].Digest.String(), nosidecar[1].DiffID.String(),
			erofscache.SidecarPath(noSidecarBlob), "sidecar"},
	} {
		b := bundleStatus(t, st, file)
		for _, w := range want {
			if b.Result != status.ResultFailed || !strings.Contains(b.Error, w) {
				t.Errorf("bundle %s: result %s, error %q; want failed naming %s", file, b.Result, b.Error, w)
			}
		}
	}
	checkAbsent(t, f.cl, "preseed.test/nocache:1")
	checkAbsent(t, f.cl, "preseed.test/nosidecar:1")
	f.checkCachedImage("preseed.test/slim:1", slim)
	checkImage(t, f.cl, "erofs", "preseed.test/whole:1", digestOf(t, whole), "whole.tar")
	f.checkConverted("preseed.test/whole:1")

	slimSize, _ := os.Stat(filepath.Join(f.root, ns, "slim.tar"))
	wholeSize, _ := os.Stat(filepath.Join(f.root, ns, "whole.tar"))
	slimRead, wholeRead := c.bytes["slim.tar"].Load(), c.bytes["whole.tar"].Load()
	t.Logf("bytes read by preseed: slim.tar %d (file %d, layers 0), whole.tar %d (file %d)", slimRead, slimSize.Size(), wholeRead, wholeSize.Size())
	if slimRead > 2*slimSize.Size() || slimSize.Size() > 64<<10 {
		t.Errorf("slim.tar: %d bytes, read %d: it should hold no layer", slimSize.Size(), slimRead)
	}

	second := f.run(f.config())
	if second.Skipped != 2 || second.Failed != 2 || second.Imported != 0 {
		t.Errorf("second run: %+v", second)
	}
	if b := bundleStatus(t, second, "slim.tar"); b.Result != status.ResultSkipped {
		t.Errorf("slim.tar on the second run: %+v", b)
	}

	// A reboot: containerd's CRI checks every image at startup; one
	// whose manifest were absent would not be loaded.
	rctx := namespaces.WithNamespace(context.Background(), ns)
	before, err := f.cl.ImageService().Get(rctx, "preseed.test/slim:1")
	if err != nil {
		t.Fatal(err)
	}
	f.d.Stop()
	f.d = containerdtest.StartConfig(t, f.d.Config)
	f.cl = f.d.Client(t)
	cri := criClient(t, f.d.Address)
	third := f.run(f.config())
	if third.Skipped != 2 || third.Imported != 0 {
		t.Errorf("run after the restart: %+v", third)
	}
	checkCRI(t, cri, "preseed.test/slim:1", repoAt("preseed.test/slim:1", slimDigest))
	// The CRI loaded the record at its startup: preseed wrote nothing that
	// an event could have told it of.
	if after, err := f.cl.ImageService().Get(rctx, "preseed.test/slim:1"); err != nil || !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Errorf("record preseed.test/slim:1 changed across the restart (%v): updated %v, then %v", err, before.UpdatedAt, after.UpdatedAt)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cri.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "preseed.test/slim:1"}})
	if err != nil || resp.GetImage() == nil || !resp.GetImage().GetPinned() {
		t.Errorf("CRI ImageStatus of preseed.test/slim:1 after the restart: %v, %v", resp.GetImage(), err)
	}
	f.checkCachedImage("preseed.test/slim:1", slim)
}

// cachedEntry is the preseed manifest entry of a slim bundle of the
// fixture, with the cached layers the build lists.
func (f *cachedFixture) cachedEntry(file string, layers []erofs.Entry) bundleformat.Entry {
	f.t.Helper()
	e := treeEntry(f.t, filepath.Join(f.root, ns, file), ns)
	for _, l := range layers {
		e.CachedLayers = append(e.CachedLayers, bundleformat.CachedLayer{
			Digest: l.Digest, DiffID: l.DiffID, Path: erofscache.BlobPath(erofscache.Root, l.DiffID), Size: l.Size, RootHash: l.RootHash,
		})
	}
	return e
}

func (f *cachedFixture) writeEntries(entries ...bundleformat.Entry) string {
	f.t.Helper()
	return writeManifestFile(f.t, bundleformat.Manifest{Bundles: entries})
}

// With a preseed manifest, the cached layers must be the entry's: a root
// hash that differs from the cache entry's sidecar, or a cached layer the
// entry does not list, fails the bundle before anything is written; the
// entry the build would write imports it.
func TestCachedBundleAgainstManifest(t *testing.T) {
	f := newCachedFixture(t)
	layers, _ := f.addSlim("slim.tar", "preseed.test/slim:1", f.cache, 1)
	good := f.cachedEntry("slim.tar", layers)

	badHash := f.cachedEntry("slim.tar", layers)
	badHash.CachedLayers[1].RootHash = strings.Repeat("0", 64)
	short := f.cachedEntry("slim.tar", layers)
	short.CachedLayers = short.CachedLayers[:1]
	for name, tc := range map[string]struct {
		entry bundleformat.Entry
		want  string
	}{
		"root hash":     {badHash, "has root hash " + layers[1].RootHash + ", the manifest says " + strings.Repeat("0", 64)},
		"missing layer": {short, "cached layers are " + layers[0].Digest.String()},
	} {
		cfg := f.config()
		cfg.Manifest = f.writeEntries(tc.entry)
		st := f.run(cfg)
		b := bundleStatus(t, st, "slim.tar")
		if b.Result != status.ResultFailed || !strings.Contains(b.Error, tc.want) || !strings.Contains(b.Error, "differs from the preseed manifest") {
			t.Errorf("%s: result %s, error %q; want failed with %q", name, b.Result, b.Error, tc.want)
		}
		checkAbsent(t, f.cl, "preseed.test/slim:1")
	}

	cfg := f.config()
	cfg.Manifest = f.writeEntries(good)
	if st := f.run(cfg); st.Imported != 1 || st.Failed != 0 {
		t.Fatalf("with the build's entry: %+v", st)
	}
	f.checkCachedImage("preseed.test/slim:1", layers)
}

// extractTree unpacks a tree tar of the build (preseed_tree) into a
// temporary directory and returns it.
func extractTree(t *testing.T, tarPath string) string {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root := t.TempDir()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return root
		}
		if err != nil {
			t.Fatalf("tree %s: %v", tarPath, err)
		}
		p := filepath.Join(root, filepath.Clean("/"+hdr.Name))
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			err = writeFrom(p, tr)
		default:
			t.Fatalf("tree %s: unexpected entry %s (type %c)", tarPath, hdr.Name, hdr.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func writeFrom(path string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// checkTreeImage asserts that an image of the build's tree is registered
// under each of its names, pinned and labelled with file, and unpacked into
// erofs with every layer served from cache: none was converted on the node.
func checkTreeImage(t *testing.T, cl *client.Client, cache, name, dgst, file string) {
	t.Helper()
	ci, ok := checkRegistered(t, cl, "erofs", name, dgst, file)
	if !ok {
		return
	}
	ctx := namespaces.WithNamespace(context.Background(), ns)
	diffIDs, err := ci.RootFS(ctx)
	if err != nil {
		t.Fatalf("image %s: %v", name, err)
	}
	sn := cl.SnapshotService("erofs")
	for i, chain := range identity.ChainIDs(diffIDs) {
		info, err := sn.Stat(ctx, chain.String())
		want := erofscache.BlobPath(cache, diffIDs[i])
		if err != nil || info.Labels[labelBlobSource] != "cache" || info.Labels[labelBlobRef] != want {
			t.Errorf("image %s: snapshot of layer %d (%v): labels %v; want served from %s", name, i, err, info.Labels, want)
		}
	}
}
