package preseed

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/unpack"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/preseed/bundlefile"
	"github.com/appliance-bundler/appliance/core/preseed/status"
)

// leaseExpiry bounds how long a lease of an import that never ended keeps
// its content, should no later run remove it (containerd's default).
const leaseExpiry = 24 * time.Hour

// importAll is the third phase: it skips, relabels or imports every bundle
// the check phase passed, and records the result or error in the bundle.
// Bundles with layers to ingest run at most c.Concurrency at once (they
// read and hash files, and containerd writes and unpacks them); those
// without, which send only metadata, c.SlimConcurrency besides.
func (c Config) importAll(ctx context.Context, logger *zap.Logger, cl *client.Client, bundles []*bundle) {
	run := &importRun{cl: cl, ids: make(map[string]string), chains: &chainLocks{held: make(map[string]chan struct{})}}
	defer run.release(context.WithoutCancel(ctx), logger)
	known := namedImages(ctx, cl, bundles)
	fn := func(b *bundle) {
		if b.err != nil {
			return
		}
		t := time.Now()
		log := logger.With(zap.String("namespace", b.Namespace))
		b.result, b.err = c.handle(namespaces.WithNamespace(ctx, b.Namespace), log, cl, run, known[b.Namespace], b)
		b.duration += time.Since(t)
	}
	var slim, full []*bundle
	for _, b := range bundles {
		if b.err == nil && len(b.meta.Layers) == 0 {
			slim = append(slim, b)
		} else {
			full = append(full, b)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { parallel(ctx, slim, c.SlimConcurrency, fn) })
	parallel(ctx, full, c.Concurrency, fn)
	wg.Wait()
}

// handle skips, relabels or imports one bundle whose metadata is known.
func (c Config) handle(ctx context.Context, log *zap.Logger, cl *client.Client, run *importRun, known map[string]images.Image, b *bundle) (string, error) {
	present, err := c.present(ctx, cl, known, b)
	if err != nil {
		return "", err
	}
	if present {
		if err := register(ctx, log, cl, b, false); err != nil {
			return "", err
		}
		return status.ResultSkipped, nil
	}
	if err := c.importBundle(ctx, log, cl, run, b); err != nil {
		return "", err
	}
	return status.ResultImported, nil
}

// present tells whether every image of the bundle was imported and
// unpacked: its name points to its target (preseed registers it only after
// the unpack, so it vouches for the rest), its snapshot exists, and so
// does the content every other name of it points to. Those other names
// (repo@digest) are then checked and put right by register without
// reading the bundle again: one may be missing after a power cut between
// two registrations, or after an upgrade from a version that registered
// only the name. known are the records of the names (namedImages).
func (c Config) present(ctx context.Context, cl *client.Client, known map[string]images.Image, b *bundle) (bool, error) {
	cs := cl.ContentStore()
	sn := cl.SnapshotService(c.Snapshotter)
	for _, im := range b.meta.Unpacked {
		img, ok := known[im.Name]
		if !ok || !sameTarget(img.Target, im.Target) {
			return false, nil
		}
		if _, err := sn.Stat(ctx, im.ChainID.String()); errdefs.IsNotFound(err) {
			return false, nil
		} else if err != nil {
			return false, fmt.Errorf("failed to look up snapshot of image %s: %w", im.Name, err)
		}
		for _, n := range im.Records {
			if _, err := cs.Info(ctx, n.Target.Digest); errdefs.IsNotFound(err) {
				return false, nil
			} else if err != nil {
				return false, fmt.Errorf("failed to look up blob %s of image %s: %w", n.Target.Digest, n.Name, err)
			}
		}
	}
	return true, nil
}

// sameTarget tells whether a record points to want.
func sameTarget(got, want ocispec.Descriptor) bool {
	return got.Digest == want.Digest && got.MediaType == want.MediaType && got.Size == want.Size
}

// importBundle ingests, unpacks and only then registers the images of one
// bundle, all inside its namespace's import lease: until the names
// are registered nothing of it is reachable but through the lease, so a
// failure or a power cut at any point leaves no name pointing at
// incomplete content, and containerd's GC (or the next run, see
// discardInterrupted) collects the rest.
func (c Config) importBundle(ctx context.Context, log *zap.Logger, cl *client.Client, run *importRun, b *bundle) error {
	ctx, err := run.with(ctx)
	if err != nil {
		return err
	}
	if err := c.hold(ctx, cl, b); err != nil {
		return err
	}

	log.Info("bundle import started", zap.String("file", b.Path))
	if err := c.ingestBundle(ctx, log, cl, b); err != nil {
		return err
	}
	for _, im := range b.meta.Unpacked {
		if err := c.unpack(ctx, log, cl, run.chains, b.meta, im); err != nil {
			return err
		}
	}
	c.syncApplied(b)
	return register(ctx, log, cl, b, true)
}

// syncApplied flushes every filesystem to disk before the names of a
// bundle whose layers were applied into erofs are registered: containerd's
// erofs differ ignores WithSyncFs, so the EROFS blob it writes for a layer
// may not be on disk when the snapshot is committed. A name registered
// after the sync then points at layers that are; a cut before it leaves
// snapshots that only the import's lease holds, which the next run's
// discardLeases collects. Cached layers are the cache's read-only blobs:
// a slim bundle needs no sync.
func (c Config) syncApplied(b *bundle) {
	if c.Snapshotter == node.ErofsSnapshotter && len(b.meta.Layers) > 0 {
		unix.Sync()
	}
}

// hold adds the layers the bundle's images need to the import's lease
// before anything is written. One the store has and the bundle lacks is
// only looked up (checkStored) and otherwise referenced by nothing: a GC
// run during the import (any lease removed triggers one) could collect it
// between that check and the registration that references it.
//
// Nothing else needs holding, which saves a transaction per blob and
// snapshot: containerd's metadata store adds a blob that exists to the
// lease when it refuses a writer for it (writeJSON, ingestEntry), and a
// snapshot that exists when it refuses a Prepare naming it as the target
// (the unpacker), in the transaction that finds it; what they create is
// created under the lease.
func (c Config) hold(ctx context.Context, cl *client.Client, b *bundle) error {
	id, _ := leases.FromContext(ctx)
	l := leases.Lease{ID: id}
	ls := cl.LeasesService()
	for d := range b.meta.Layers {
		r := leases.Resource{ID: d.String(), Type: "content"}
		if err := ls.AddResource(ctx, l, r); err != nil {
			return fmt.Errorf("failed to add %s %s to the import's lease: %w", r.Type, r.ID, err)
		}
	}
	return nil
}

// ingestBundle writes the blobs of the bundle into the content store and,
// with a manifest entry, checks the sha256 of the whole file.
func (c Config) ingestBundle(ctx context.Context, log *zap.Logger, cl *client.Client, b *bundle) error {
	s, err := bundlefile.OpenStream(c.Open, b.File, b.entry != nil)
	if err != nil {
		return err
	}
	defer s.Close()
	cs := &loggingStore{Store: cl.ContentStore(), log: log.With(zap.String("file", b.Path)), layers: b.meta.Layers}
	err = ingest(ctx, s, cs, b.meta)
	if b.entry != nil && !unavailable(err) {
		// Also after a failed ingest (a layer that does not match its
		// digest): the rest of the file is read through the hash, so the
		// error says the bytes changed since the build rather than only
		// which blob broke. This costs a read only on that failure path.
		// Checked before anything is unpacked or named: until register,
		// the ingested content is reachable only through the lease.
		sum, serr := s.Sum()
		switch {
		case serr != nil && err == nil:
			err = serr
		case serr == nil:
			if mismatch := b.man.CheckSum(b.File, b.entry, sum); mismatch != nil {
				if err != nil {
					mismatch = fmt.Errorf("%v; importing it failed: %w", mismatch, err)
				}
				err = mismatch
			}
		}
	}
	b.bytes += s.BytesRead()
	return err
}

// unpack unpacks one image, whose JSON blobs ingest wrote with their GC
// labels (so that they outlive the lease), into the snapshotter with
// containerd's unpacker, as a pull does: a layer the erofs snapshotter
// finds in its layer content cache is staged read-only at Prepare and
// committed without being read (its blob is not in the content store);
// the others are applied from the content store by the diff service.
// WithSyncFs makes containerd sync each applied layer's files to disk
// before it commits the snapshot: after a power cut, a snapshot that
// exists has all its files (a staged one is the cache's read-only blob).
func (c Config) unpack(ctx context.Context, log *zap.Logger, cl *client.Client, chains *chainLocks, m *bundlefile.Metadata, im bundlefile.Image) error {
	// The JSON blobs are in the store (ingest wrote them, with their GC
	// labels): the unpacker reads them from memory.
	cs := jsonStore{Store: cl.ContentStore(), json: memBlobs(m.JSON)}
	u, err := unpack.NewUnpacker(ctx, cs, unpack.WithUnpackPlatform(unpack.Platform{
		// The metadata pass chose the manifest already: its config's own
		// platform field must not turn the unpack into a mere fetch.
		Platform:       platforms.All,
		SnapshotterKey: c.Snapshotter,
		Snapshotter:    cl.SnapshotService(c.Snapshotter),
		Applier:        cl.DiffService(),
		ApplyOpts:      []diff.ApplyOpt{diff.WithSyncFs(true)},
	}), unpack.WithDuplicationSuppressor(chains))
	if err != nil {
		return fmt.Errorf("failed to start unpacking image %s: %w", im.Name, err)
	}
	log.Info("unpack started", zap.String("image", im.Name), zap.String("snapshotter", c.Snapshotter))
	// The manifest the metadata pass chose (the best match the bundle
	// holds), not the index: containerd would pick the best match of the
	// whole index, which a narrowed bundle may not hold.
	err = images.Dispatch(ctx, u.Unpack(storedChildren(cs)), nil, im.Manifest)
	res, werr := u.Wait()
	if err == nil {
		err = werr
	}
	if err == nil && res.Unpacks != 1 {
		// The unpacker skips a config it cannot unpack (a rootfs type
		// other than "layers") without an error.
		err = fmt.Errorf("containerd's unpacker unpacked %d images, want 1", res.Unpacks)
	}
	if err != nil {
		return fmt.Errorf("failed to unpack image %s into %s: %w", im.Name, c.Snapshotter, err)
	}
	log.Info("unpack finished", zap.String("image", im.Name))
	return nil
}

// storedChildren is the unpacker's fetch handler: the manifest and config
// are in the content store already, and so is every layer the unpacker
// applies (ingest wrote it); a cached layer is not, and is never asked for
// (the snapshotter stages it). So a layer needs nothing.
func storedChildren(p content.Provider) images.HandlerFunc {
	return func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if images.IsLayerType(desc.MediaType) {
			return nil, nil
		}
		return images.Children(ctx, p, desc)
	}
}

// heldChildren is images.ChildrenHandler narrowed to what the import wrote:
// of an index, only the manifests (or nested indexes) the metadata pass
// read. The others are absent from the content store (another platform's,
// or left out of a narrowed bundle), so they get no GC label and are not
// walked, as with containerd's import and its skip-missing option; a
// platform matcher alone could match an absent one (platforms.Default() on
// amd64 matches 386 too).
func heldChildren(p content.Provider, m *bundlefile.Metadata) images.HandlerFunc {
	return func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		children, err := images.Children(ctx, p, desc)
		if err != nil || !images.IsIndexType(desc.MediaType) {
			return children, err
		}
		var held []ocispec.Descriptor
		for _, ch := range children {
			if _, ok := m.JSON[ch.Digest]; ok {
				held = append(held, ch)
			}
		}
		return held, nil
	}
}

// register points every name of the bundle's images at its target with
// our labels, each image's name first. After an import (imported) every
// record is written; for a bundle already imported, a record is written
// only if it is missing, points elsewhere or lacks a label, and the
// bundle file it names may be any bundle that claims the name too (a
// digest both register). Other labels of existing records are kept.
func register(ctx context.Context, log *zap.Logger, cl *client.Client, b *bundle, imported bool) error {
	is := cl.ImageService()
	for _, im := range b.meta.Unpacked {
		for _, n := range im.Records {
			if err := registerName(ctx, log, is, b, n, imported); err != nil {
				return err
			}
		}
	}
	return nil
}

// registerName writes one record, if needed (see register), and logs
// "image registered" when it wrote the record's target.
func registerName(ctx context.Context, log *zap.Logger, is images.Store, b *bundle, n bundlefile.Record, imported bool) error {
	img := images.Image{
		Name:   n.Name,
		Target: n.Target,
		Labels: map[string]string{LabelPinned: PinnedValue, LabelBundle: b.FileName},
	}
	fields := []string{"labels." + LabelPinned, "labels." + LabelBundle}
	// After an import the record is most likely missing (a first boot):
	// created first, it costs one round trip instead of a failed update.
	setTarget, missing := imported, imported
	if !imported {
		cur, err := is.Get(ctx, n.Name)
		switch {
		case errdefs.IsNotFound(err):
			setTarget, missing = true, true
		case err != nil:
			return fmt.Errorf("failed to look up image %s: %w", n.Name, err)
		case !sameTarget(cur.Target, n.Target):
			setTarget = true
		case cur.Labels[LabelPinned] == PinnedValue && (cur.Labels[LabelBundle] == b.FileName || slices.Contains(b.sharers[n.Name], cur.Labels[LabelBundle])):
			return nil
		}
	}
	if setTarget {
		fields = append(fields, "target")
	}
	if err := put(ctx, is, img, fields, missing); err != nil {
		return err
	}
	if setTarget {
		log.Info("image registered", zap.String("image", n.Name), zap.String("digest", n.Target.Digest.String()))
	}
	return nil
}

// put creates the record, if it is missing, or updates its fields. Either
// may find the other case (a record created by another bundle that shares
// a digest name, or one that was there before an import): then the other
// is done.
func put(ctx context.Context, is images.Store, img images.Image, fields []string, missing bool) error {
	var err error
	if !missing {
		_, err = is.Update(ctx, img, fields...)
	}
	if missing || errdefs.IsNotFound(err) {
		if _, err = is.Create(ctx, img); errdefs.IsAlreadyExists(err) {
			_, err = is.Update(ctx, img, fields...)
		}
	}
	if err != nil {
		return fmt.Errorf("failed to register image %s: %w", img.Name, err)
	}
	return nil
}
