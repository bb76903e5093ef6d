// Package preseed imports the container images shipped in the appliance
// image (bundles, see docs/bundle-format.md) into containerd at boot.
//
// The preseed runnable scans <Root>/<namespace>/ for *.tar, *.tar.zst and
// *.tar.gz bundles, imports each into its namespace, unpacks it into the
// snapshotter the CRI uses, pins it (io.cri-containerd.pinned=pinned) and
// labels it with its bundle file, unpins images whose bundle is gone, skips
// bundles already imported without reading their layers, writes a status
// file, logs one summary line and signals Done.
//
// It must not stop at the first bad bundle, leave a half-imported image
// registered under its name, read a bundle whole into memory, fetch
// anything from a registry, or delete images (unpinning lets containerd's
// and the kubelet's garbage collection decide).
//
// # Preseed manifest
//
// With Config.Manifest set (the appliance sets /etc/appliance/preseed.json,
// the build's //images:preseed_json, read as ManifestFile), a bundle must
// be what the build made, or it is refused and the others continue:
//
//   - Every bundle file must be listed, by its path or by namespace and
//     file name; an unlisted one fails with "not in the preseed manifest".
//   - Before any image is registered or skipped, the file's size, the
//     digest of its index.json, its one image name, index.json's target
//     descriptor and its manifest digests must equal the manifest's; a
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
// Listed bundles that are absent are logged, not failed: the manifest says
// what a bundle must be, not that each one must be present.
//
// An empty Config.Manifest enforces nothing (bundles are still checked
// against their own digests, as always).
package preseed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/appliance-bundler/appliance/core/supervisor"
)

// Defaults for the appliance.
const (
	DefaultRoot        = "/containerd/preseed"
	DefaultAddress     = "/run/containerd/containerd.sock"
	DefaultSnapshotter = "overlayfs"
	DefaultStatusPath  = "/run/preseed/status.json"
	// DefaultConcurrency: on 2 CPUs the benchmark gains up to 4 bundles at
	// once (ingest of one overlaps the unpack and syncs of another).
	DefaultConcurrency = 4

	// LabelPinned is the CRI's pin: the kubelet's image GC leaves the image.
	LabelPinned = "io.cri-containerd.pinned"
	// PinnedValue is the value LabelPinned must have.
	PinnedValue = "pinned"
	// LabelBundle names the bundle file (in its namespace directory) an
	// image was preseeded from; only images carrying it are ever unpinned.
	LabelBundle = "appliance-bundler.dev/preseed.bundle"
)

// Results of one bundle.
const (
	ResultImported = "imported"
	ResultSkipped  = "skipped"
	ResultFailed   = "failed"
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
	// Platform selects the manifest to unpack; default the machine's.
	Platform platforms.MatchComparer
	// Open opens a bundle file; default OpenBundle. Tests wrap it to count
	// the bytes read.
	Open func(path string) (io.ReadCloser, error)
	// Manifest is the path of the preseed manifest every bundle is checked
	// against (see the package doc); empty checks none.
	Manifest string
}

func (c Config) withDefaults() Config {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.Root, DefaultRoot)
	set(&c.Address, DefaultAddress)
	set(&c.Snapshotter, DefaultSnapshotter)
	set(&c.StatusPath, DefaultStatusPath)
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Platform == nil {
		c.Platform = platforms.DefaultStrict()
	}
	if c.Open == nil {
		c.Open = func(p string) (io.ReadCloser, error) { return OpenBundle(p) }
	}
	return c
}

// Status is the content of the status file.
type Status struct {
	// State is "done" once every bundle was handled.
	State    string    `json:"state"`
	Started  time.Time `json:"started"`
	Duration float64   `json:"duration_seconds"`
	Imported int       `json:"imported"`
	Skipped  int       `json:"skipped"`
	Failed   int       `json:"failed"`
	// Bytes is what was read from bundle files.
	Bytes    int64          `json:"bytes"`
	Bundles  []BundleStatus `json:"bundles"`
	Ignored  []Ignored      `json:"ignored,omitempty"`
	Unpinned []ImageStatus  `json:"unpinned,omitempty"`
}

// BundleStatus is the result of one bundle.
type BundleStatus struct {
	Namespace string        `json:"namespace"`
	File      string        `json:"file"`
	Result    string        `json:"result"`
	Error     string        `json:"error,omitempty"`
	Images    []ImageStatus `json:"images,omitempty"`
	Bytes     int64         `json:"bytes"`
	Duration  float64       `json:"duration_seconds"`
}

// ImageStatus names an image.
type ImageStatus struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Digest    string `json:"digest"`
}

// Ignored is a path in the preseed tree that is not a bundle.
type Ignored struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

type compression int

const (
	compressionNone compression = iota
	compressionGzip
	compressionZstd
)

// bundleKind tells a bundle by its name.
func bundleKind(name string) (compression, bool) {
	switch {
	case strings.HasSuffix(name, ".tar.zst"):
		return compressionZstd, true
	case strings.HasSuffix(name, ".tar.gz"):
		return compressionGzip, true
	case strings.HasSuffix(name, ".tar"):
		return compressionNone, true
	}
	return 0, false
}

// bundle is one bundle file and what became of it.
type bundle struct {
	namespace, file, path string
	kind                  compression
	meta                  *metadata
	// entry is the bundle's preseed manifest entry, when one is enforced.
	entry    *ManifestEntry
	err      error
	result   string
	bytes    int64
	duration time.Duration
}

// scan lists the bundles under root and what is there that is not one.
func scan(root string) ([]*bundle, []Ignored, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("failed to read %s: %w", root, err)
	}
	var bundles []*bundle
	var ignored []Ignored
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		st, err := os.Stat(dir)
		if err != nil {
			ignored = append(ignored, Ignored{Path: dir, Reason: err.Error()})
			continue
		}
		if !st.IsDir() {
			ignored = append(ignored, Ignored{Path: dir, Reason: "not a namespace directory"})
			continue
		}
		// containerd checks namespace names with identifiers.Validate.
		if err := identifiers.Validate(e.Name()); err != nil {
			ignored = append(ignored, Ignored{Path: dir, Reason: fmt.Sprintf("invalid namespace name: %v", err)})
			continue
		}
		files, err := os.ReadDir(dir)
		if err != nil {
			ignored = append(ignored, Ignored{Path: dir, Reason: err.Error()})
			continue
		}
		for _, f := range files {
			kind, ok := bundleKind(f.Name())
			if !ok {
				ignored = append(ignored, Ignored{Path: filepath.Join(dir, f.Name()), Reason: "not a bundle: want *.tar, *.tar.zst or *.tar.gz"})
				continue
			}
			bundles = append(bundles, &bundle{namespace: e.Name(), file: f.Name(), path: filepath.Join(dir, f.Name()), kind: kind})
		}
	}
	return bundles, ignored, nil
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
// without the supervisor, for tests and benchmarks.
func (c Config) Preseed(ctx context.Context, logger *zap.Logger) (*Status, error) {
	c = c.withDefaults()
	start := time.Now()
	cl, err := client.New(c.Address)
	if err != nil {
		return nil, fmt.Errorf("failed to connect to containerd at %s: %w", c.Address, err)
	}
	defer cl.Close()

	bundles, ignored, err := scan(c.Root)
	if err != nil {
		return nil, err
	}
	for _, ig := range ignored {
		logger.Warn("not a bundle; skipped", zap.String("path", ig.Path), zap.String("reason", ig.Reason))
	}

	var man *manifest
	var manErr error
	if c.Manifest != "" {
		if man, manErr = loadManifest(c.Manifest); manErr != nil {
			logger.Error("preseed manifest unusable; every bundle is refused", zap.String("manifest", c.Manifest), zap.Error(manErr))
		} else {
			logger.Info("checking bundles against the preseed manifest", zap.String("manifest", c.Manifest), zap.Int("bundles", len(man.byPath)))
			man.logAbsent(logger, bundles)
		}
	}

	// Learn every bundle's images first (cheap: no layer is read), so two
	// bundles claiming one name are both refused before either is imported.
	c.parallel(ctx, bundles, func(b *bundle) {
		if manErr != nil {
			b.err = manErr
			return
		}
		if man != nil {
			if b.entry, b.err = man.entry(b); b.err != nil {
				return
			}
		}
		s, err := openStream(c.Open, b.path, b.kind, false)
		if err != nil {
			b.err = err
			return
		}
		defer s.Close()
		b.meta, b.err = readMetadata(ctx, s, c.Platform)
		b.bytes += s.count.n
		if b.err != nil || man == nil {
			return
		}
		size, err := s.size(b.path)
		if err != nil {
			b.err = err
			return
		}
		b.err = man.check(b, b.entry, size)
	})
	claims := make(map[string][]*bundle) // namespace/name -> bundles
	for _, b := range bundles {
		if b.err == nil {
			for _, im := range b.meta.images {
				k := b.namespace + "/" + im.Name
				claims[k] = append(claims[k], b)
			}
		}
	}
	for k, bs := range claims {
		if len(bs) < 2 {
			continue
		}
		for _, b := range bs {
			var others []string
			for _, o := range bs {
				if o != b {
					others = append(others, o.file)
				}
			}
			if b.err == nil {
				b.err = fmt.Errorf("image %s is also named by %s", strings.TrimPrefix(k, b.namespace+"/"), strings.Join(others, ", "))
			}
		}
	}

	c.parallel(ctx, bundles, func(b *bundle) {
		if b.err != nil {
			return
		}
		t := time.Now()
		b.result, b.err = c.handle(namespaces.WithNamespace(ctx, b.namespace), cl, b)
		b.duration += time.Since(t)
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// A bundle can fail because containerd died under it; then the whole
	// run is retried once containerd is back, not reported as a bad bundle.
	for _, b := range bundles {
		if b.err != nil {
			if _, err := cl.Version(ctx); err != nil {
				return nil, fmt.Errorf("containerd is not answering after %s failed (%v): %w", b.path, b.err, err)
			}
			break
		}
	}

	st := &Status{State: "done", Started: start, Ignored: ignored}
	for _, b := range bundles {
		if b.err != nil {
			if unavailable(b.err) {
				return nil, fmt.Errorf("containerd went away while importing %s: %w", b.path, b.err)
			}
			b.result = ResultFailed
		}
		bs := BundleStatus{Namespace: b.namespace, File: b.file, Result: b.result, Bytes: b.bytes, Duration: b.duration.Seconds()}
		if b.meta != nil {
			for _, im := range b.meta.images {
				bs.Images = append(bs.Images, ImageStatus{Name: im.Name, Digest: im.Target.Digest.String()})
			}
		}
		switch b.result {
		case ResultImported:
			st.Imported++
			logger.Info("bundle imported", zap.String("namespace", b.namespace), zap.String("file", b.path),
				zap.Int("images", len(bs.Images)), zap.Int64("bytes", b.bytes), zap.Duration("duration", b.duration))
		case ResultSkipped:
			st.Skipped++
			logger.Info("bundle already imported; skipped", zap.String("namespace", b.namespace), zap.String("file", b.path),
				zap.Int("images", len(bs.Images)))
		default:
			st.Failed++
			bs.Error = b.err.Error()
			logger.Error("bundle failed", zap.String("namespace", b.namespace), zap.String("file", b.path), zap.Error(b.err))
		}
		st.Bytes += b.bytes
		st.Bundles = append(st.Bundles, bs)
	}

	unpinned, err := c.unpinGone(ctx, cl, bundles)
	if err != nil {
		if unavailable(err) {
			return nil, err
		}
		// Stale pins only keep images that could be collected: report,
		// do not fail the boot.
		logger.Error("failed to unpin images whose bundle is gone", zap.Error(err))
	}
	for _, u := range unpinned {
		logger.Info("bundle gone; image unpinned", zap.String("namespace", u.Namespace), zap.String("image", u.Name))
	}
	st.Unpinned = unpinned
	st.Duration = time.Since(start).Seconds()
	if err := writeStatus(c.StatusPath, st); err != nil {
		return nil, err
	}
	return st, nil
}

// parallel runs fn on every bundle, at most c.Concurrency at once.
func (c Config) parallel(ctx context.Context, bundles []*bundle, fn func(*bundle)) {
	sem := make(chan struct{}, c.Concurrency)
	var wg sync.WaitGroup
	for _, b := range bundles {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
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
	var se interface{ GRPCStatus() *status.Status }
	for e := err; e != nil; e = errors.Unwrap(e) {
		if errors.As(e, &se) && se.GRPCStatus().Code() == codes.Unavailable {
			return true
		}
	}
	return false
}

// handle skips, relabels or imports one bundle whose metadata is known.
func (c Config) handle(ctx context.Context, cl *client.Client, b *bundle) (string, error) {
	present, err := c.present(ctx, cl, b)
	if err != nil {
		return "", err
	}
	if present {
		if err := register(ctx, cl, b, false); err != nil {
			return "", err
		}
		return ResultSkipped, nil
	}
	if err := c.importBundle(ctx, cl, b); err != nil {
		return "", err
	}
	return ResultImported, nil
}

// present tells whether every image of the bundle is registered with the
// same target and unpacked into the snapshotter.
func (c Config) present(ctx context.Context, cl *client.Client, b *bundle) (bool, error) {
	is := cl.ImageService()
	sn := cl.SnapshotService(c.Snapshotter)
	for _, im := range b.meta.images {
		img, err := is.Get(ctx, im.Name)
		if errdefs.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("failed to look up image %s: %w", im.Name, err)
		}
		if img.Target.Digest != im.Target.Digest {
			return false, nil
		}
		if _, err := sn.Stat(ctx, im.ChainID.String()); errdefs.IsNotFound(err) {
			return false, nil
		} else if err != nil {
			return false, fmt.Errorf("failed to look up snapshot of image %s: %w", im.Name, err)
		}
	}
	return true, nil
}

// importBundle ingests, unpacks, labels and then registers the images of
// one bundle, all inside one lease: until the names are registered, nothing
// of it is reachable, and containerd's GC collects it if this fails.
func (c Config) importBundle(ctx context.Context, cl *client.Client, b *bundle) error {
	ctx, done, err := cl.WithLease(ctx)
	if err != nil {
		return fmt.Errorf("failed to take a lease: %w", err)
	}
	defer done(context.WithoutCancel(ctx))

	s, err := openStream(c.Open, b.path, b.kind, b.entry != nil)
	if err != nil {
		return err
	}
	err = ingest(ctx, s, cl.ContentStore(), b.meta)
	if b.entry != nil && !unavailable(err) {
		// Also after a failed ingest (a layer that does not match its
		// digest): the rest of the file is read through the hash, so the
		// error says the bytes changed since the build rather than only
		// which blob broke. This costs a read only on that failure path.
		sum, serr := s.sum()
		switch {
		case serr != nil && err == nil:
			err = serr
		case serr == nil && sum != b.entry.SHA256:
			// Checked before anything is unpacked or named: until
			// register, the ingested content is reachable only through
			// the lease.
			mismatch := fmt.Errorf("bundle %s differs from the preseed manifest %s: sha256 of the file is %s, the manifest says %s (its bytes changed after the build)",
				b.path, c.Manifest, sum, b.entry.SHA256)
			if err != nil {
				mismatch = fmt.Errorf("%v; importing it failed: %w", mismatch, err)
			}
			err = mismatch
		}
	}
	b.bytes += s.count.n
	s.Close()
	if err != nil {
		return err
	}

	cs := cl.ContentStore()
	for _, im := range b.meta.images {
		// GC labels from manifest to config and layers, as client.Import
		// sets them, so the content outlives the lease.
		h := images.FilterPlatforms(images.SetChildrenLabels(cs, images.ChildrenHandler(cs)), c.Platform)
		if err := images.Walk(ctx, h, im.Target); err != nil {
			return fmt.Errorf("failed to label the content of image %s: %w", im.Name, err)
		}
		img := client.NewImageWithPlatform(cl, images.Image{Name: im.Name, Target: im.Target}, c.Platform)
		if err := img.Unpack(ctx, c.Snapshotter); err != nil {
			return fmt.Errorf("failed to unpack image %s into %s: %w", im.Name, c.Snapshotter, err)
		}
	}
	return register(ctx, cl, b, true)
}

// register points the bundle's image names at their targets with our
// labels. Other labels of existing records are kept.
func register(ctx context.Context, cl *client.Client, b *bundle, target bool) error {
	is := cl.ImageService()
	for _, im := range b.meta.images {
		img := images.Image{
			Name:   im.Name,
			Target: im.Target,
			Labels: map[string]string{LabelPinned: PinnedValue, LabelBundle: b.file},
		}
		fields := []string{"labels." + LabelPinned, "labels." + LabelBundle}
		if target {
			fields = append(fields, "target")
		}
		if !target {
			// Skipped bundle: touch the record only if a label is off.
			cur, err := is.Get(ctx, im.Name)
			if err != nil {
				return fmt.Errorf("failed to look up image %s: %w", im.Name, err)
			}
			if cur.Labels[LabelPinned] == PinnedValue && cur.Labels[LabelBundle] == b.file {
				continue
			}
		}
		if _, err := is.Update(ctx, img, fields...); err != nil {
			if !errdefs.IsNotFound(err) {
				return fmt.Errorf("failed to update image %s: %w", im.Name, err)
			}
			if _, err := is.Create(ctx, img); err != nil {
				return fmt.Errorf("failed to create image %s: %w", im.Name, err)
			}
		}
	}
	return nil
}

// unpinGone removes our pin from images whose bundle no longer names them.
// An image whose bundle file is still there but could not be read, or was
// refused, keeps its pin: its names are unknown, not gone (a bundle swapped
// for another at rest must not get the good image collected).
func (c Config) unpinGone(ctx context.Context, cl *client.Client, bundles []*bundle) ([]ImageStatus, error) {
	claimed := make(map[string]bool)    // namespace/name
	unreadable := make(map[string]bool) // namespace/file
	for _, b := range bundles {
		if b.meta == nil || b.err != nil {
			unreadable[b.namespace+"/"+b.file] = true
		}
		if b.meta == nil {
			continue
		}
		for _, im := range b.meta.images {
			claimed[b.namespace+"/"+im.Name] = true
		}
	}
	nss, err := cl.NamespaceService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to list namespaces: %w", err)
	}
	sort.Strings(nss)
	var out []ImageStatus
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		is := cl.ImageService()
		imgs, err := is.List(nctx, fmt.Sprintf("labels.%q", LabelBundle))
		if err != nil {
			return out, fmt.Errorf("failed to list images of namespace %s: %w", ns, err)
		}
		for _, img := range imgs {
			if claimed[ns+"/"+img.Name] || unreadable[ns+"/"+img.Labels[LabelBundle]] {
				continue
			}
			// Listing a label path without the label in Labels deletes it.
			upd := images.Image{Name: img.Name}
			if _, err := is.Update(nctx, upd, "labels."+LabelPinned, "labels."+LabelBundle); err != nil {
				return out, fmt.Errorf("failed to unpin image %s in namespace %s: %w", img.Name, ns, err)
			}
			out = append(out, ImageStatus{Namespace: ns, Name: img.Name, Digest: img.Target.Digest.String()})
		}
	}
	return out, nil
}

// writeStatus replaces the status file atomically, so a reader never sees
// half of it.
func writeStatus(path string, st *Status) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("failed to create directory of %s: %w", path, err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode status: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("failed to rename %s to %s: %w", tmp, path, err)
	}
	return nil
}
