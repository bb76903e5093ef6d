// Package preseed imports the container images shipped in the appliance
// image (bundles, see docs/bundle-format.md) into containerd at boot.
//
// The preseed runnable scans <Root>/<namespace>/ for *.tar, *.tar.zst and
// *.tar.gz bundles, imports each into its namespace, unpacks it into the
// snapshotter the CRI uses, registers it under every name of
// bundleformat.References (its name, repo@<target digest> and, for an
// index, repo@<digest of the platform manifest it unpacks>, whose record
// points to that manifest: the names a pod may give, which the CRI reports
// as RepoTags and RepoDigests), pins each record
// (io.cri-containerd.pinned=pinned) and labels it with its bundle file,
// unpins every record of a bundle that is gone, skips bundles already
// imported without reading their layers (putting right any digest name
// that is missing or points elsewhere), writes a status file, logs one
// summary line and signals Done.
//
// Done, and the status file's state "done", mean that the CRI serves
// every name of the imported and skipped bundles of CRINamespace
// (serve.go): listed by the CRI as a RepoTag or RepoDigest, pinned, and on
// the same CRI image as the other names of its image. The kubelet may
// start pods at once. A bundle with a name the CRI still does not serve
// after Config.CRIWait fails, naming them.
//
// An index may be narrowed to some platforms (bundleformat.AnnotationPlatforms):
// its blob is the original one, the other platforms' manifests are absent.
// Only the content the bundle holds is labelled and walked, and the best
// match it holds is unpacked, as containerd's import with its skip-missing
// option does.
//
// # Cached layers
//
// A bundle built for the appliance leaves out the layers the appliance's
// EROFS layer content cache holds (bundleformat.AnnotationCachedLayers on
// its index.json descriptor; core/erofscache). Before anything is written,
// each such layer of an unpacked manifest must have its cache entry in one
// of Config.CacheDirs (and, with Config.RequireVerity, its dm-verity
// sidecar), and with a preseed manifest they must be the entry's
// cached_layers; else the bundle fails with an error naming the bundle,
// the layer, its diffID and the missing path. Only the blobs the bundle
// holds are ingested. Images unpack through containerd's unpacker
// (core/unpack), as a pull does: the erofs snapshotter stages a cached
// layer read-only from the cache and it is committed without being read;
// the others are applied from the content store. On a reboot nothing more
// is needed for the CRI: its startup check (images.Check) loads an image
// whose layer blobs are absent as long as its manifest is there
// (TestCachedBundles restarts containerd and asks the CRI).
//
// It must not stop at the first bad bundle, leave a half-imported image
// registered under its name, read a bundle whole into memory, fetch
// anything from a registry, or delete images (unpinning lets containerd's
// and the kubelet's garbage collection decide).
//
// # Preseed manifest
//
// With Config.Manifest set (the appliance sets /etc/appliance/preseed.json,
// the build's //images:preseed.json, a bundleformat.Manifest), a bundle must
// be what the build made, or it is refused and the others continue:
//
//   - Every bundle file must be listed, by its path or by namespace and
//     file name; an unlisted one fails with "not in the preseed manifest".
//   - Before any image is registered or skipped, the file's size, the
//     digest of its index.json, its one image name, index.json's target
//     descriptor and its manifest digests must equal the manifest's, and
//     every name preseed registers must be in the entry's references; a
//     difference fails the bundle with an error naming the file, the
//     manifest and each thing that differs. This reads no layer, so a
//     bundle already imported is still skipped cheaply.
//   - A bundle that is imported is also hashed whole (sha256 of the file,
//     as the manifest has it) while it streams, without seeking over blobs
//     the store already has and without a second read; a different sum
//     fails it before its names are registered. This catches changed bytes
//     containerd's own digest checks cannot see (a blob the content store
//     already has is never read back, tar headers are never hashed).
//     An import that fails on a blob's digest reads the rest of the file
//     through the hash too, so its error says the bytes changed since the
//     build.
//   - A manifest that cannot be read or is not a valid manifest fails every
//     bundle with the reason and the manifest's path: never a silent pass.
//     Images already registered keep their pins (their bundle is unknown,
//     not gone).
//
// A listed bundle that is absent fails, by its path and the manifest's:
// the build placed it, so its images must not vanish without a failure.
//
// An empty Config.Manifest enforces nothing (bundles are still checked
// against their own digests, as always).
//
// # Phases
//
// Preseed runs recover (recover.go), scan (scan.go), check (check.go),
// import (import.go) and report (report.go, which waits for the CRI in
// serve.go before it writes the status), in that order; a context that
// ends during a pass ends the run with its error and no status.
//
// This package is the runnable and everything it says to containerd. What
// a bundle file holds is read by core/preseed/bundlefile; whether a bundle
// may be imported (the preseed manifest and the layer content cache) is
// decided by core/preseed/check; the status file's schema, which the
// kubelet and the tests read, is core/preseed/status.
//
// # Power cuts
//
// An import writes its blobs (the JSON ones with their GC labels) under
// its namespace's import lease, labelled LabelLease, unpacks (containerd
// syncs each layer's files before it commits the snapshot), and registers
// the names last: a cut at any point leaves no name pointing at
// incomplete content, and a cut after the image's name is registered
// leaves a complete, pinned image the next run skips, registering any
// digest name the cut left out. Each run first aborts the ingests of ours
// (ref "preseed-<digest>") and deletes the leases of ours an interrupted
// run left, in every namespace: their bytes may never have reached the
// disk, so they are written again rather than resumed.
//
// Progress is logged at Info level with fixed messages and fields ("bundle
// import started", "layer ingest started", "layer ingest progress" (a big
// layer's, at each quarter), "layer ingested", "unpack
// started", "unpack finished", "image registered", "interrupted ingest
// discarded", "interrupted import lease removed"): the power-cut E2E
// (tests/e2e/powercut) matches them, so they change only together.
// "image registered" is logged once per record whose target is written
// (the image's name first, then its digest names), with the fields image
// (the record's name) and digest (what it points to); a skipped bundle
// logs it only for a digest name it puts right.
package preseed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/erofscache"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/preseed/bundlefile"
	"github.com/appliance-bundler/appliance/core/preseed/check"
	"github.com/appliance-bundler/appliance/core/preseed/status"
	"github.com/appliance-bundler/appliance/core/supervisor"
)

// Defaults for the appliance.
const (
	DefaultRoot = bundleformat.PreseedRoot
	// DefaultConcurrency: on 2 CPUs the benchmark gains up to 4 bundles at
	// once (ingest of one overlaps the unpack and syncs of another).
	DefaultConcurrency = 4
	// DefaultSlimConcurrency: a bundle whose layers are all cached sends
	// containerd only metadata, a dozen round trips each waiting on one
	// of its databases (and its fsync on disk). On 2 CPUs the benchmark's
	// 20 such bundles (-mib 8, two runs each, tmpfs / disk): 4 at once
	// 284-376 ms / 0.71-0.84 s; 8: 213-230 ms / 0.65-0.66 s; 16: 193-221
	// ms / 0.54-0.88 s; 20: 162-230 ms / 0.57-0.60 s.
	DefaultSlimConcurrency = 16

	// LabelPinned is the CRI's pin: the kubelet's image GC leaves the image.
	LabelPinned = "io.cri-containerd.pinned"
	// PinnedValue is the value LabelPinned must have.
	PinnedValue = "pinned"
	// LabelBundle names the bundle file (in its namespace directory) an
	// image was preseeded from; only images carrying it are ever unpinned.
	LabelBundle = "appliance-bundler.dev/preseed.bundle"
	// LabelLease marks the leases preseed's imports take (one per
	// namespace and run; its value is the namespace), so a later run can
	// tell those an interrupted import left from anyone else's.
	LabelLease = "appliance-bundler.dev/preseed.lease"
)

// Config says where bundles are and where they go. Zero fields take the
// defaults above.
type Config struct {
	// Root holds one directory per containerd namespace.
	Root string
	// Address is containerd's socket.
	Address string
	// Snapshotter is the one the CRI plugin uses.
	Snapshotter string
	// StatusPath is where the JSON status is written.
	StatusPath string
	// Concurrency bounds bundles handled at once.
	Concurrency int
	// SlimConcurrency bounds the bundles imported at once that have no
	// layer to ingest (every one cached), besides Concurrency others.
	SlimConcurrency int
	// Platform selects the manifest to unpack; default the machine's.
	Platform platforms.MatchComparer
	// Open opens a bundle file; default bundlefile.Open. Tests wrap it to count
	// the bytes read.
	Open func(path string) (io.ReadCloser, error)
	// Manifest is the path of the preseed manifest every bundle is checked
	// against (see the package doc); empty checks none.
	Manifest string
	// CacheDirs are containerd's EROFS layer content caches, in its order
	// (core/containerd's LayerContentCaches); nil means erofscache.Root.
	CacheDirs []string
	// RequireVerity makes a cached layer without its dm-verity sidecar fail
	// its bundle, as containerd's dmverity_mode "on" would fail its mount.
	RequireVerity bool
	// CRIWait bounds how long a run waits, before it writes its status
	// and signals Done, for the CRI to serve every name it registered in
	// CRINamespace; zero means DefaultCRIWait. Past it each bundle with a
	// name still not served fails, naming them. Negative waits for
	// nothing: for a Platform other than the CRI's, in tests.
	CRIWait time.Duration
}

func (c Config) withDefaults() Config {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.Root, DefaultRoot)
	set(&c.Address, node.ContainerdAddress)
	set(&c.Snapshotter, node.Snapshotter)
	set(&c.StatusPath, status.DefaultPath)
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.SlimConcurrency <= 0 {
		c.SlimConcurrency = DefaultSlimConcurrency
	}
	if c.CRIWait == 0 {
		c.CRIWait = DefaultCRIWait
	}
	if c.Platform == nil {
		c.Platform = platforms.DefaultStrict()
	}
	if c.Open == nil {
		c.Open = func(p string) (io.ReadCloser, error) { return bundlefile.Open(p) }
	}
	if c.CacheDirs == nil {
		c.CacheDirs = []string{erofscache.Root}
	}
	return c
}

// bundle is one bundle file and what became of it.
type bundle struct {
	bundlefile.File
	meta *bundlefile.Metadata
	// man and entry are the preseed manifest and the bundle's entry in it,
	// when one is enforced.
	man   *check.Manifest
	entry *bundleformat.Entry
	// sharers are, for each name of the bundle's images that other bundles
	// of its namespace register too (a digest), those bundles' files.
	sharers  map[string][]string
	err      error
	result   string
	bytes    int64
	duration time.Duration
}

// Run is the preseed runnable: it handles every bundle once, then signals
// Healthy and Done. It returns an error only when containerd went away
// (the supervisor then runs it again); bad bundles are results, not errors.
func (c Config) Run(ctx context.Context) error {
	c = c.withDefaults()
	logger := supervisor.Logger(ctx)
	st, err := c.Preseed(ctx, logger)
	if err != nil {
		return err
	}
	logger.Info("preseed finished",
		zap.Int("imported", st.Imported), zap.Int("skipped", st.Skipped), zap.Int("failed", st.Failed),
		zap.Int("ignored", len(st.Ignored)), zap.Int("unpinned", len(st.Unpinned)),
		zap.Int64("bytes", st.Bytes), zap.Float64("duration_seconds", st.Duration),
		zap.String("status", c.StatusPath))
	supervisor.Signal(ctx, supervisor.SignalHealthy)
	supervisor.Signal(ctx, supervisor.SignalDone)
	return nil
}

// Preseed handles every bundle once and writes the status file. It is Run
// without the supervisor, for tests and benchmarks. The phases, in order:
// recover (what an interrupted earlier run left), scan, check, import,
// report.
func (c Config) Preseed(ctx context.Context, logger *zap.Logger) (*status.Status, error) {
	c = c.withDefaults()
	start := time.Now()
	cl, err := client.New(c.Address)
	if err != nil {
		return nil, fmt.Errorf("failed to connect to containerd at %s: %w", c.Address, err)
	}
	defer cl.Close()

	if err := discardInterrupted(ctx, logger, cl); err != nil {
		return nil, err
	}
	bundles, ignored, err := c.scan(logger)
	if err != nil {
		return nil, err
	}
	absent := c.check(ctx, logger, bundles)
	// A pass cut short leaves bundles it never looked at: no result of
	// either pass means anything then.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.importAll(ctx, logger, cl, bundles)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.report(ctx, logger, cl, start, append(bundles, absent...), ignored)
}

// parallel runs fn on every bundle, at most n at once.
func parallel(ctx context.Context, bundles []*bundle, n int, fn func(*bundle)) {
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i, b := range bundles {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			// The bundles not started say why, so that no caller takes one
			// for checked or handled.
			for _, u := range bundles[i:] {
				if u.err == nil {
					u.err = ctx.Err()
				}
			}
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(b)
		}()
	}
	wg.Wait()
}

// unavailable tells an error of the connection to containerd (which the
// supervisor fixes by restarting it) from an error of the bundle.
func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errdefs.IsUnavailable(err) {
		return true
	}
	var se interface{ GRPCStatus() *grpcstatus.Status }
	for e := err; e != nil; e = errors.Unwrap(e) {
		if errors.As(e, &se) && se.GRPCStatus().Code() == codes.Unavailable {
			return true
		}
	}
	return false
}
