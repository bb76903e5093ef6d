package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/opencontainers/go-digest"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/erofs"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/containerd"
	"github.com/appliance-bundler/appliance/core/erofscache"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/preseed"
)

// labelBlobSource is the erofs snapshotter's label saying where a
// snapshot's layer blob comes from ("cache" for a layer content cache hit;
// containerd's plugins/snapshots/erofs, which keeps the name unexported).
const labelBlobSource = "io.containerd.erofs.v1/blob.source"

// zeroCopy is the zero-copy path's input: the preseed tree (slim bundles
// and the EROFS layer content cache) and its manifest, made as the build
// makes them.
type zeroCopy struct {
	// root holds the slim bundles as root/<ns>/image-NN.tar.
	root     string
	cacheDir string
	manifest string
	// bytes is the size of the slim bundles together.
	bytes int64
	// entries is the number of cache entries (distinct diffIDs).
	entries int
	build   time.Duration
	// note is filled by the measurement: the cache hits containerd saw.
	note string
}

// makeZeroCopy makes the preseed tree of set's bundles as bundletool tree
// makes the appliance's (build/oci/bundle.WriteTreeCached, every bundle
// with erofs_cache, its layers converted by build/oci/erofs.TreeCache, that
// is CacheBundle, with mkfs.erofs from PATH) and unpacks it under
// work/tree, as the appliance carries it.
func makeZeroCopy(ctx context.Context, work string, set *bundleSet) (*zeroCopy, error) {
	tree, scratch := filepath.Join(work, "tree"), filepath.Join(work, "convert")
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return nil, err
	}
	z := &zeroCopy{
		root: filepath.Join(tree, bundleformat.PreseedRoot), cacheDir: filepath.Join(tree, erofscache.Root),
		manifest: filepath.Join(work, "tree.json"),
	}
	fmt.Printf("making the preseed tree: slim bundles and the EROFS layer cache...\n")
	start := time.Now()
	inputs := treeInputs(set.files)
	for i := range inputs {
		inputs[i].ErofsCache = true
	}
	m, err := writeTree(ctx, tree, scratch, inputs)
	if err != nil {
		return nil, err
	}
	z.build = time.Since(start)
	if err := os.WriteFile(z.manifest, m, 0o644); err != nil {
		return nil, fmt.Errorf("failed to write the preseed manifest: %w", err)
	}
	if err := z.count(m); err != nil {
		return nil, err
	}
	fmt.Printf("made %d cache entries and %d slim bundles (%s in all) in %v (build time, not measured below)\n",
		z.entries, set.n(), size(z.bytes), z.build.Round(time.Millisecond))
	return z, nil
}

// writeTree writes the preseed tree of inputs, converting layers in
// scratch, unpacks it under dir and returns its manifest.
func writeTree(ctx context.Context, dir, scratch string, inputs []bundle.TreeInput) ([]byte, error) {
	pr, pw := io.Pipe()
	var m []byte
	var werr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		m, werr = bundle.WriteTreeCached(ctx, pw, inputs, erofs.TreeCache(scratch))
		pw.CloseWithError(werr)
	}()
	err := untar(pr, dir)
	if err == nil {
		// The tar's end comes before the writer's last padding.
		_, err = io.Copy(io.Discard, pr)
	}
	pr.CloseWithError(err)
	<-done
	if err = errors.Join(werr, err); err != nil {
		return nil, fmt.Errorf("failed to make the preseed tree: %w", err)
	}
	return m, nil
}

// count reads the tree's manifest m: the slim bundles' bytes and the
// distinct cache entries.
func (z *zeroCopy) count(m []byte) error {
	man, err := bundleformat.ParseManifest(m)
	if err != nil {
		return fmt.Errorf("the tree's preseed manifest: %w", err)
	}
	seen := map[digest.Digest]bool{}
	for _, b := range man.Bundles {
		z.bytes += b.Size
		for _, c := range b.CachedLayers {
			seen[c.DiffID] = true
		}
	}
	z.entries = len(seen)
	return nil
}

// path is the zero-copy preseed measurement.
func (z *zeroCopy) path(e *env) preseedPath {
	return preseedPath{
		label: "zero-copy erofs", root: z.root, bytes: z.bytes, manifest: z.manifest,
		daemon: e.erofsConfig(z.cacheDir), concurrency: preseed.DefaultConcurrency,
		cacheDir: z.cacheDir, check: z.checkHits,
	}
}

// erofsConfig is the zero-copy row's containerd: the erofs snapshotter
// with the cache at cacheDir.
func (e *env) erofsConfig(cacheDir string) containerd.Config {
	c := e.erofs
	c.LayerContentCaches = []string{cacheDir}
	return c
}

// checkHits fails unless every committed snapshot of the erofs
// snapshotter is served from the layer content cache (none was converted),
// and notes how many there are.
func (z *zeroCopy) checkHits(ctx context.Context, address string) error {
	c, err := client.New(address)
	if err != nil {
		return err
	}
	defer c.Close()
	hits, total := 0, 0
	err = c.SnapshotService(node.ErofsSnapshotter).Walk(namespaces.WithNamespace(ctx, ns), func(_ context.Context, info snapshots.Info) error {
		if info.Kind != snapshots.KindCommitted {
			return nil
		}
		total++
		if info.Labels[labelBlobSource] == "cache" {
			hits++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("failed to list the erofs snapshots: %w", err)
	}
	z.note = fmt.Sprintf("%d of %d layer snapshots served from the cache", hits, total)
	if hits != total || total != z.entries {
		return fmt.Errorf("zero-copy import: %s, want all %d cache entries", z.note, z.entries)
	}
	return nil
}
