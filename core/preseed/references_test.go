package preseed_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/preseed"
	"github.com/appliance-bundler/appliance/core/preseed/status"
	"github.com/appliance-bundler/appliance/tests/preseedtest"
)

// unpackedManifest is the manifest of target this machine unpacks: target
// itself, or the best match of an index that the content store holds.
func unpackedManifest(t *testing.T, ctx context.Context, cs content.Store, target ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	if !images.IsIndexType(target.MediaType) {
		return target
	}
	b, err := content.ReadBlob(ctx, cs, target)
	if err != nil {
		t.Fatalf("index %s: %v", target.Digest, err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatalf("index %s: %v", target.Digest, err)
	}
	p := platforms.DefaultStrict()
	var best *ocispec.Descriptor
	for i, m := range idx.Manifests {
		if m.Platform == nil || !p.Match(*m.Platform) {
			continue
		}
		if _, err := cs.Info(ctx, m.Digest); err != nil {
			continue
		}
		if best == nil || p.Less(*m.Platform, *best.Platform) {
			best = &idx.Manifests[i]
		}
	}
	if best == nil {
		t.Fatalf("index %s: no manifest of this platform in the store", target.Digest)
	}
	return *best
}

// wantNames are the records an image registered as img must have, each
// with the descriptor it must point to.
func wantNames(t *testing.T, cl *client.Client, img images.Image) map[string]ocispec.Descriptor {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	m := unpackedManifest(t, ctx, cl.ContentStore(), img.Target)
	var manifests []digest.Digest
	if m.Digest != img.Target.Digest {
		manifests = append(manifests, m.Digest)
	}
	refs, err := bundleformat.References(img.Name, img.Target.Digest, manifests...)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]ocispec.Descriptor{}
	for _, r := range refs {
		out[r] = img.Target
		if len(manifests) > 0 && strings.HasSuffix(r, "@"+m.Digest.String()) {
			out[r] = m
		}
	}
	return out
}

// checkRecord asserts the record name points to want, pinned and labelled
// with file. (containerd keeps a record's target without its platform.)
func checkRecord(t *testing.T, cl *client.Client, name string, want ocispec.Descriptor, file string) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	img, err := cl.ImageService().Get(ctx, name)
	if err != nil {
		t.Errorf("record %s: %v", name, err)
		return
	}
	got := img.Target
	if got.Digest != want.Digest || got.MediaType != want.MediaType || got.Size != want.Size {
		t.Errorf("record %s: target %s (%s, %d bytes), want %s (%s, %d bytes)", name, got.Digest, got.MediaType, got.Size, want.Digest, want.MediaType, want.Size)
	}
	if img.Labels[preseed.LabelPinned] != preseed.PinnedValue || img.Labels[preseed.LabelBundle] != file {
		t.Errorf("record %s: labels %v, want pinned and bundle %s", name, img.Labels, file)
	}
}

// otherPlatform is a platform this machine does not run.
func otherPlatform() v1.Platform {
	if runtime.GOARCH == "arm64" {
		return v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	return v1.Platform{OS: "linux", Architecture: "arm64"}
}

func hostPlatform() v1.Platform { return v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH} }

func platformImage(t *testing.T, p v1.Platform, seed uint64, size int64) v1.Image {
	t.Helper()
	l, err := preseedtest.RandomLayer(seed, size)
	if err != nil {
		t.Fatal(err)
	}
	img, err := preseedtest.NewPlatformImage(p, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// addIndex writes a bundle of ix named name as file and expects it good;
// it returns the index's digest.
func (f *fixture) addIndex(file, name string, ix preseedtest.Index) string {
	f.t.Helper()
	ix.Name = name
	e, d, err := preseedtest.IndexEntries(ix)
	if err != nil {
		f.t.Fatal(err)
	}
	write(f.t, filepath.Join(f.root, ns, file), e)
	f.good[name] = goodImage{file: file, digest: d.String()}
	return d.String()
}

// repoAt is the digest name of image name (a tag reference) for d.
func repoAt(name, d string) string {
	return strings.SplitN(name, ":", 2)[0] + "@" + d
}

// criClient talks to the CRI plugin of the test's containerd.
func criClient(t *testing.T, address string) runtimeapi.ImageServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewImageServiceClient(conn)
}

// checkCRI checks, with one read and no retry, that the CRI lists the
// image tagged tag with exactly the RepoDigests digests, pinned, and
// resolves each digest name to it: a preseed run that returned has waited
// for the CRI (serve.go), so nothing may still be on its way.
func checkCRI(t *testing.T, cri runtimeapi.ImageServiceClient, tag string, digests ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cri.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatalf("CRI ListImages: %v", err)
	}
	for _, img := range resp.Images {
		if !slices.Contains(img.RepoTags, tag) {
			continue
		}
		got := fmt.Sprintf("tags %q, digests %q, pinned %v", img.RepoTags, img.RepoDigests, img.Pinned)
		if !slices.Equal(img.RepoTags, []string{tag}) || !slices.Equal(slices.Sorted(slices.Values(img.RepoDigests)), slices.Sorted(slices.Values(digests))) || !img.Pinned {
			t.Errorf("right after preseed, the CRI lists %s with %s; want digests %q, pinned", tag, got, digests)
			return
		}
		for _, d := range digests {
			st, err := cri.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: d}})
			if err != nil || st.GetImage().GetId() != img.Id {
				t.Errorf("CRI ImageStatus %s: %v, image %v; want %s", d, err, st.GetImage(), img.Id)
			}
		}
		t.Logf("CRI: image %s: %s", img.Id, got)
		return
	}
	t.Errorf("right after preseed, the CRI lists no image tagged %s", tag)
}

// contentRefs are the digests a blob's GC labels name as its content.
func contentRefs(t *testing.T, cs content.Store, d string) []string {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	info, err := cs.Info(ctx, digest.Digest(d))
	if err != nil {
		t.Fatalf("blob %s: %v", d, err)
	}
	var out []string
	for k, v := range info.Labels {
		if strings.HasPrefix(k, "containerd.io/gc.ref.content.") {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// An index image, whole or narrowed to this machine's platform, is
// registered under its tag, repo@<index digest> and repo@<the manifest it
// unpacks>, each pinned and labelled; the CRI lists it with those
// RepoDigests and resolves each. Only what the store holds gets GC labels.
func TestIndexReferences(t *testing.T) {
	f := newFixture(t)
	host, other := hostPlatform(), otherPlatform()
	// Two images: the CRI lists images by config, so one would merge them.
	multiHost, multiOther := platformImage(t, host, 400, 128<<10), platformImage(t, other, 410, 96<<10)
	narrowHost, narrowOther := platformImage(t, host, 420, 128<<10), platformImage(t, other, 430, 96<<10)
	full := f.addIndex("multi.tar", "preseed.test/multi:1", preseedtest.Index{Images: []v1.Image{multiHost, multiOther}})
	narrow := f.addIndex("narrow.tar.zst", "preseed.test/narrow:1", preseedtest.Index{
		Images: []v1.Image{narrowOther, narrowHost}, Held: []string{host.OS + "/" + host.Architecture}})
	cfg := f.config()
	// The build's own manifest of these bundles (build/oci/bundle.Inspect).
	cfg.Manifest = f.writeManifest(f.goodFiles()...)
	st := f.run(cfg)
	if st.Imported != 4 || st.Failed != 0 {
		t.Fatalf("status %+v", st)
	}
	f.checkGood(st)

	cri := criClient(t, f.d.Address)
	for file, c := range map[string]struct{ name, index, host, other string }{
		"multi.tar":      {"preseed.test/multi:1", full, digestOf(t, multiHost), digestOf(t, multiOther)},
		"narrow.tar.zst": {"preseed.test/narrow:1", narrow, digestOf(t, narrowHost), digestOf(t, narrowOther)},
	} {
		hostDigest := c.host
		want := []string{c.name, repoAt(c.name, c.index), repoAt(c.name, hostDigest)}
		if got := bundleStatus(t, st, file).Images; len(got) != 1 || !slices.Equal(got[0].References, want) {
			t.Errorf("%s: status images %+v, want references %q", file, got, want)
		}
		// The manifest's record points to the manifest, with its platform.
		ctx := namespaces.WithNamespace(context.Background(), ns)
		rec, err := f.cl.ImageService().Get(ctx, want[2])
		if err != nil {
			t.Fatal(err)
		}
		if rec.Target.Digest.String() != hostDigest || !images.IsManifestType(rec.Target.MediaType) {
			t.Errorf("%s: record %s points to %+v, want manifest %s", file, want[2], rec.Target, hostDigest)
		}
		// The index is labelled with the one manifest the store holds.
		if got := contentRefs(t, f.cl.ContentStore(), c.index); !slices.Equal(got, []string{hostDigest}) {
			t.Errorf("%s: index %s references %q, want only the manifest %s", file, c.index, got, hostDigest)
		}
		checkCRI(t, cri, c.name, want[1], want[2])
		if _, err := f.cl.ContentStore().Info(ctx, digest.Digest(c.other)); !errdefs.IsNotFound(err) {
			t.Errorf("%s: the other platform's manifest is in the store (%v)", file, err)
		}
	}

	second := f.run(cfg)
	if second.Skipped != 4 || second.Failed != 0 {
		t.Fatalf("second run: %+v", second)
	}
	f.checkGood(second)
}

// On a reboot, a bundle already imported is skipped without reading a
// layer, and its digest names are put right: one deleted, one pointing
// elsewhere (as after a cut between two registrations, or an upgrade from a
// version that registered only the tag) are registered again, one that
// lost its pin is pinned again; a third run changes nothing.
func TestSkipRestoresDigestNames(t *testing.T) {
	f := newFixture(t)
	name := "preseed.test/multi:1"
	index := f.addIndex("multi.tar", name, preseedtest.Index{Images: []v1.Image{
		platformImage(t, otherPlatform(), 510, 96<<10), platformImage(t, hostPlatform(), 500, 256<<10)}})
	if st := f.run(f.config()); st.Imported != 3 || st.Failed != 0 {
		t.Fatalf("first run: %+v", st)
	}
	ctx := namespaces.WithNamespace(context.Background(), ns)
	is := f.cl.ImageService()
	rec, err := is.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	manifestRef := repoAt(name, unpackedManifest(t, ctx, f.cl.ContentStore(), rec.Target).Digest.String())
	goodA := repoAt("preseed.test/good-a:1.0", f.good["preseed.test/good-a:1.0"].digest)
	goodB := repoAt("preseed.test/good-b:1.0", f.good["preseed.test/good-b:1.0"].digest)
	// The CRI adds its label to each record it learns of, and creates one
	// again if it was deleted meanwhile: let it finish first.
	waitManaged(t, f.cl, name, repoAt(name, index), manifestRef, goodA, goodB)
	for _, n := range []string{repoAt(name, index), goodA} {
		if err := is.Delete(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := is.Update(ctx, images.Image{Name: manifestRef, Target: rec.Target}, "target"); err != nil {
		t.Fatal(err)
	}
	if _, err := is.Update(ctx, images.Image{Name: goodB}, "labels."+preseed.LabelPinned); err != nil {
		t.Fatal(err)
	}

	c := &countingOpen{bytes: map[string]*atomic.Int64{}}
	cfg := f.config()
	cfg.Open = c.open
	rec2 := newRecorder(nil)
	second := f.runWith(cfg, rec2.logger(t))
	if second.Skipped != 3 || second.Imported != 0 || second.Failed != 0 {
		t.Fatalf("second run: %+v", second)
	}
	f.checkGood(second)
	var registered []string
	for _, e := range rec2.named("image registered") {
		registered = append(registered, e.fields["image"].(string))
	}
	sort.Strings(registered)
	if want := slices.Sorted(slices.Values([]string{repoAt(name, index), goodA, manifestRef})); !slices.Equal(registered, want) {
		t.Errorf("second run registered %q, want %q", registered, want)
	}
	plain := filepath.Join(f.root, ns, "multi.tar")
	limit := firstLayerOffset(t, plain)
	if got := c.bytes["multi.tar"].Load(); got == 0 || got > limit {
		t.Errorf("second run read %d bytes of multi.tar; its first layer starts at byte %d", got, limit)
	}
	t.Logf("bytes read on the second run: multi.tar %d (layers start at %d), good-a.tar %d", c.bytes["multi.tar"].Load(), limit, c.bytes["good-a.tar"].Load())

	rec3 := newRecorder(nil)
	third := f.runWith(f.config(), rec3.logger(t))
	if third.Skipped != 3 || len(rec3.named("image registered")) != 0 {
		t.Errorf("third run: %+v, registered %+v", third, rec3.named("image registered"))
	}
}

// When the platform matcher matches more than one manifest of an index
// (platforms.Default() on amd64 matches 386 too), only what the bundle holds
// is labelled and walked, and the best match it holds is unpacked: an
// index narrowed to 386 alone unpacks 386, though amd64 is preferred.
func TestIndexMatcherMatchesMore(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("platforms.Default() matches another platform (386) only on amd64")
	}
	f := newFixture(t)
	amd64, i386, arm64 := v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "386"}, v1.Platform{OS: "linux", Architecture: "arm64"}
	both := []v1.Image{platformImage(t, i386, 600, 64<<10), platformImage(t, amd64, 610, 64<<10), platformImage(t, arm64, 620, 64<<10)}
	f.addIndex("both.tar", "preseed.test/both:1", preseedtest.Index{Images: both, Held: []string{"linux/386", "linux/amd64"}})
	only386 := []v1.Image{platformImage(t, amd64, 630, 64<<10), platformImage(t, i386, 640, 64<<10)}
	ix := preseedtest.Index{Name: "preseed.test/only386:1", Images: only386, Held: []string{"linux/386"}}
	e, d, err := preseedtest.IndexEntries(ix)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(f.root, ns, "only386.tar"), e)
	cfg := f.config()
	cfg.Platform = platforms.Default()
	// The CRI cannot serve only386's tag: containerd's images.Manifest
	// reads every manifest its matcher (Default, as the CRI's) takes, and
	// the amd64 one is absent. The appliance's preseed uses DefaultStrict,
	// with which it never unpacks such a bundle; this test is about
	// preseed's own walk, so it does not wait for the CRI.
	cfg.CRIWait = -1
	st := f.run(cfg)
	if st.Imported != 4 || st.Failed != 0 {
		t.Fatalf("status %+v", st)
	}
	f.checkGood(st)
	ctx := namespaces.WithNamespace(context.Background(), ns)
	if got, want := contentRefs(t, f.cl.ContentStore(), f.good["preseed.test/both:1"].digest), []string{digestOf(t, both[1])}; !slices.Equal(got, want) {
		t.Errorf("index of both.tar references %q, want %q", got, want)
	}
	m386 := digestOf(t, only386[1])
	if refs := bundleStatus(t, st, "only386.tar").Images[0].References; !slices.Contains(refs, repoAt(ix.Name, m386)) {
		t.Errorf("only386.tar registered %q, want %s", refs, repoAt(ix.Name, m386))
	}
	for _, n := range []string{ix.Name, repoAt(ix.Name, d.String())} {
		checkRecord(t, f.cl, n, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.Digest(d.String()), Size: indexSize(t, e, d.Hex)}, "only386.tar")
	}
	mdesc := manifestDesc(t, only386[1])
	checkRecord(t, f.cl, repoAt(ix.Name, m386), mdesc, "only386.tar")
	if ok, err := client.NewImage(f.cl, images.Image{Name: "x", Target: mdesc}).IsUnpacked(ctx, f.d.Snapshotter); err != nil || !ok {
		t.Errorf("the 386 manifest is not unpacked: %v, %v", ok, err)
	}
	if st := f.run(cfg); st.Skipped != 4 || st.Failed != 0 {
		t.Errorf("second run: %+v", st)
	}

	// Waiting for the CRI, as the appliance does: only386's tag is never
	// served, so past the wait that bundle fails, naming it, and the
	// others stand. (A bound, not a sleep: the others are served in
	// milliseconds, and 20 s leaves a loaded machine room.)
	cfg.CRIWait = 20 * time.Second
	third := f.run(cfg)
	if third.Skipped != 3 || third.Failed != 1 {
		t.Fatalf("run waiting for the CRI: %+v", third)
	}
	if b := bundleStatus(t, third, "only386.tar"); b.Result != status.ResultFailed || !strings.Contains(b.Error, "the CRI does not serve") || !strings.Contains(b.Error, ix.Name+" (not listed)") {
		t.Errorf("only386.tar: %s %q, want failed naming %s as not listed by the CRI", b.Result, b.Error, ix.Name)
	}
}

// indexSize is the size of blob hex among entries.
func indexSize(t *testing.T, entries []preseedtest.Entry, hex string) int64 {
	t.Helper()
	for _, e := range entries {
		if e.Header.Name == bundleformat.BlobPrefix+hex {
			return e.Header.Size
		}
	}
	t.Fatalf("no blob %s", hex)
	return 0
}

// manifestDesc is the descriptor of img's manifest.
func manifestDesc(t *testing.T, img v1.Image) ocispec.Descriptor {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(raw), Size: int64(len(raw))}
}

// Two bundles of one image under two tags share its digest name: both
// import, and later runs leave the shared record alone (no churn between
// the two bundles' labels). When one bundle goes, its tag is unpinned and
// the shared record stays pinned, labelled with the other.
func TestSharedDigestName(t *testing.T) {
	f := newFixture(t)
	img := image(t, 700, 64<<10)
	f.addGood("one.tar", "preseed.test/shared:1", img)
	f.addGood("two.tar", "preseed.test/shared:2", img)
	if st := f.run(f.config()); st.Imported != 4 || st.Failed != 0 {
		t.Fatalf("first run: %+v", st)
	}
	shared := repoAt("preseed.test/shared:1", digestOf(t, img))
	ctx := namespaces.WithNamespace(context.Background(), ns)
	before, err := f.cl.ImageService().Get(ctx, shared)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(nil)
	if st := f.runWith(f.config(), rec.logger(t)); st.Skipped != 4 || st.Failed != 0 {
		t.Fatalf("second run: %+v", st)
	}
	after, err := f.cl.ImageService().Get(ctx, shared)
	if err != nil {
		t.Fatal(err)
	}
	if !after.UpdatedAt.Equal(before.UpdatedAt) || len(rec.named("image registered")) != 0 {
		t.Errorf("second run changed %s: labels %v -> %v, registered %+v", shared, before.Labels, after.Labels, rec.named("image registered"))
	}

	if err := os.Remove(filepath.Join(f.root, ns, "one.tar")); err != nil {
		t.Fatal(err)
	}
	st := f.run(f.config())
	if len(st.Unpinned) != 1 || st.Unpinned[0].Name != "preseed.test/shared:1" {
		t.Errorf("unpinned %+v, want only preseed.test/shared:1", st.Unpinned)
	}
	checkRecord(t, f.cl, shared, after.Target, "two.tar")
}

// waitManaged waits until the CRI has labelled every record of names as
// its own ("io.cri-containerd.image": "managed"), which it does to the
// records it learns of from containerd's events.
func waitManaged(t *testing.T, cl *client.Client, names ...string) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range names {
		for {
			img, err := cl.ImageService().Get(ctx, n)
			if err != nil {
				t.Fatalf("record %s: %v", n, err)
			}
			if img.Labels["io.cri-containerd.image"] == "managed" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the CRI never labelled %s: %v", n, img.Labels)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// A two-platform index narrowed by the build's own bundle writer
// (build/oci/bundle.Write with a platform) keeps its original index blob,
// so the image keeps the digest it was built as, and imports, unpacks and
// is named by that digest, checked against the build's preseed manifest.
func TestNarrowedIndexFromBundleWriter(t *testing.T) {
	f := newFixture(t)
	host, other := hostPlatform(), otherPlatform()
	hostImg, otherImg := platformImage(t, host, 800, 128<<10), platformImage(t, other, 810, 128<<10)
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: otherImg, Descriptor: v1.Descriptor{Platform: &other}},
		mutate.IndexAddendum{Add: hostImg, Descriptor: v1.Descriptor{Platform: &host}}), types.OCIImageIndex)
	built, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendIndex(idx); err != nil {
		t.Fatal(err)
	}
	name := "preseed.test/built:1"
	out, err := os.Create(filepath.Join(f.root, ns, "built.tar.zst"))
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.Write(out, dir, name, bundleformat.Zstd, host.OS+"/"+host.Architecture); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	f.good[name] = goodImage{file: "built.tar.zst", digest: built.String()}
	cfg := f.config()
	cfg.Manifest = f.writeManifest(f.goodFiles()...)
	st := f.run(cfg)
	if st.Imported != 3 || st.Failed != 0 {
		t.Fatalf("status %+v", st)
	}
	f.checkGood(st)
	hostDigest := digestOf(t, hostImg)
	want := []string{name, repoAt(name, built.String()), repoAt(name, hostDigest)}
	if got := bundleStatus(t, st, "built.tar.zst").Images[0].References; !slices.Equal(got, want) {
		t.Errorf("references %q, want %q", got, want)
	}
	ctx := namespaces.WithNamespace(context.Background(), ns)
	if _, err := f.cl.ContentStore().Info(ctx, digest.Digest(digestOf(t, otherImg))); !errdefs.IsNotFound(err) {
		t.Errorf("the other platform's manifest is in the store (%v)", err)
	}
	checkCRI(t, criClient(t, f.d.Address), name, want[1], want[2])
	if st := f.run(cfg); st.Skipped != 3 || st.Failed != 0 {
		t.Errorf("second run: %+v", st)
	}
}

// A JSON blob the content store has already, without GC labels (left by
// someone else, held by their lease), is not written again: preseed sets
// its labels by an update, so that the image's config and layers outlive
// the import's lease as when preseed writes the blob itself.
func TestStoredManifestGetsGCLabels(t *testing.T) {
	f := newFixture(t)
	img := f.good["preseed.test/good-a:1.0"].img
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	desc := ocispec.Descriptor{MediaType: string(mt), Digest: digest.FromBytes(raw), Size: int64(len(raw))}
	ctx := namespaces.WithNamespace(context.Background(), ns)
	lctx, done, err := f.cl.WithLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer done(ctx)
	cs := f.cl.ContentStore()
	if err := content.WriteBlob(lctx, cs, "test-"+desc.Digest.String(), bytes.NewReader(raw), desc); err != nil {
		t.Fatal(err)
	}
	if got := contentRefs(t, cs, desc.Digest.String()); len(got) != 0 {
		t.Fatalf("manifest written by the test references %q", got)
	}

	if st := f.run(f.config()); st.Imported != 2 || st.Failed != 0 {
		t.Fatalf("status %+v", st)
	}
	var mf ocispec.Manifest
	if err := json.Unmarshal(raw, &mf); err != nil {
		t.Fatal(err)
	}
	want := []string{mf.Config.Digest.String()}
	for _, l := range mf.Layers {
		want = append(want, l.Digest.String())
	}
	sort.Strings(want)
	if got := contentRefs(t, cs, desc.Digest.String()); !slices.Equal(got, want) {
		t.Errorf("manifest %s references %q, want its config and layers %q", desc.Digest, got, want)
	}
}
