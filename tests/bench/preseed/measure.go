package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/containerd"
	"github.com/appliance-bundler/appliance/core/preseed"
	"github.com/appliance-bundler/appliance/core/preseed/bundlefile"
)

// row is one path's numbers.
type row struct {
	label string
	// bundles is the size of the bundle files the path reads.
	bundles int64
	first   time.Duration
	read    reads
	stored  stored
	// reboot is the second run's (zero for ctr, which has none).
	reboot     time.Duration
	rebootRead reads
	note       string
}

// reads are the bytes read during one import.
type reads struct {
	// bundle is counted through the readers the bench controls: the files
	// preseed opens (Config.Open) or the pipe into ctr's stdin.
	bundle int64
	// importer and daemon are rchar deltas of /proc/<pid>/io (every byte
	// through read syscalls, page cache or not, sockets included): the
	// importer is the bench process running preseed, or the ctr processes;
	// the daemon is containerd.
	importer, daemon int64
}

// stored are the allocated bytes of what holds the images.
type stored struct{ content, snapshots, cache int64 }

func (s stored) total() int64 { return s.content + s.snapshots + s.cache }

// measureCtr imports every bundle with `ctr images import`, one after the
// other, through the transfer service into the overlay snapshotter.
func (e *env) measureCtr(ctx context.Context, set *bundleSet) (row, error) {
	d, err := e.start(ctx, filepath.Join(e.work, "ctr"), e.overlay)
	if err != nil {
		return row{}, err
	}
	defer d.stop()
	r := row{label: "ctr images import", bundles: set.bytes}
	var piped atomic.Int64
	probe, err := startProbe(d.pid)
	if err != nil {
		return row{}, err
	}
	start := time.Now()
	for _, f := range set.files {
		if err := e.ctrImport(d, f, &piped); err != nil {
			return row{}, err
		}
	}
	r.first = time.Since(start)
	// ctr's counters join the bench's when it is reaped; the bench itself
	// read the piped bytes from the files.
	if r.read, err = probe.end(piped.Load()); err != nil {
		return row{}, err
	}
	r.read.importer -= r.read.bundle
	if err := checkCount(ctx, d.cfg.Address, set.n()); err != nil {
		return row{}, fmt.Errorf("after ctr: %w", err)
	}
	r.stored, err = storedOf(d, "")
	return r, err
}

func (e *env) ctrImport(d *daemon, file string, piped *atomic.Int64) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(e.ctrBin, "--address", d.cfg.Address, "--namespace", ns,
		"images", "import", "--snapshotter", d.cfg.Snapshotter, "-")
	cmd.Stdin = &countingReader{r: f, n: piped}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ctr images import %s: %w\n%s", file, err, out)
	}
	return nil
}

// preseedPath is one preseed measurement.
type preseedPath struct {
	label, root string
	// bytes is the size of the bundle files under root.
	bytes       int64
	manifest    string
	daemon      containerd.Config
	concurrency int
	// cacheDir is the layer content cache, counted as stored; empty for none.
	cacheDir string
	// check, when set, checks the imported images further.
	check func(ctx context.Context, address string) error
	// tmpfs puts containerd's root on a tmpfs (the appliance without a
	// state disk) instead of the work directory's disk.
	tmpfs bool
}

// measurePreseed runs preseed into a fresh containerd, then restarts
// containerd on the same root (a reboot) and runs it again.
func (e *env) measurePreseed(ctx context.Context, set *bundleSet, p preseedPath) (row, error) {
	dir := filepath.Join(e.work, slug(p.label))
	if p.tmpfs {
		unmount, err := mountTmpfs(filepath.Join(dir, "root"))
		if err != nil {
			return row{}, err
		}
		defer unmount()
	}
	r := row{label: p.label, bundles: p.bytes}
	d, err := e.start(ctx, dir, p.daemon)
	if err != nil {
		return row{}, err
	}
	first, err := p.run(ctx, d, dir, set.n(), false)
	if err == nil && p.check != nil {
		err = p.check(ctx, d.cfg.Address)
	}
	if err == nil {
		r.stored, err = storedOf(d, p.cacheDir)
	}
	d.stop()
	if err != nil {
		return row{}, fmt.Errorf("%s, first boot: %w", p.label, err)
	}
	r.first, r.read = first.took, first.read
	if d, err = e.start(ctx, dir, p.daemon); err != nil {
		return row{}, err
	}
	defer d.stop()
	second, err := p.run(ctx, d, dir, set.n(), true)
	if err != nil {
		return row{}, fmt.Errorf("%s, reboot: %w", p.label, err)
	}
	r.reboot, r.rebootRead = second.took, second.read
	return r, nil
}

// mountTmpfs mounts a tmpfs at p (made first) and returns its unmount.
func mountTmpfs(p string) (func(), error) {
	if err := os.MkdirAll(p, 0o711); err != nil {
		return nil, err
	}
	if err := unix.Mount("tmpfs", p, "tmpfs", 0, "mode=0711"); err != nil {
		return nil, fmt.Errorf("failed to mount a tmpfs at %s: %w", p, err)
	}
	return func() { _ = unix.Unmount(p, unix.MNT_DETACH) }, nil
}

// result is one timed preseed run.
type result struct {
	took time.Duration
	read reads
}

// run runs preseed once, into d, and checks it imported (or, on a reboot,
// skipped) all n bundles.
func (p preseedPath) run(ctx context.Context, d *daemon, dir string, n int, reboot bool) (result, error) {
	var bundle atomic.Int64
	cfg := preseed.Config{
		Root: p.root, Address: d.cfg.Address, Snapshotter: d.cfg.Snapshotter, Concurrency: p.concurrency,
		StatusPath: filepath.Join(dir, "status-first.json"), Manifest: p.manifest,
		Open: func(path string) (io.ReadCloser, error) {
			f, err := bundlefile.Open(path)
			if err != nil {
				return nil, err
			}
			return &countingFile{f: f, n: &bundle}, nil
		},
	}
	if reboot {
		cfg.StatusPath = filepath.Join(dir, "status-reboot.json")
	}
	if p.cacheDir != "" {
		cfg.CacheDirs = []string{p.cacheDir}
		// As the appliance: a cached layer needs its sidecar only under
		// containerd's dmverity_mode "on".
		cfg.RequireVerity = d.cfg.DmverityMode == "on"
	}
	probe, err := startProbe(d.pid)
	if err != nil {
		return result{}, err
	}
	t0 := time.Now()
	st, err := cfg.Preseed(ctx, zap.NewNop())
	took := time.Since(t0)
	if err != nil {
		return result{}, err
	}
	rd, err := probe.end(bundle.Load())
	if err != nil {
		return result{}, err
	}
	done := st.Imported
	if reboot {
		done = st.Skipped
	}
	if done != n || st.Failed != 0 {
		return result{}, fmt.Errorf("%d imported, %d skipped, %d failed of %d (status in %s)",
			st.Imported, st.Skipped, st.Failed, n, cfg.StatusPath)
	}
	if err := checkCount(ctx, d.cfg.Address, n); err != nil {
		return result{}, err
	}
	return result{took: took, read: rd}, nil
}

// storedOf is the allocated size of d's content store and snapshots, and
// of the layer content cache cacheDir unless it is empty.
func storedOf(d *daemon, cacheDir string) (stored, error) {
	var s stored
	seen := map[inode]bool{}
	var err error
	if s.content, err = allocated(d.contentDir(), seen); err != nil {
		return s, err
	}
	if s.snapshots, err = allocated(d.snapshotsDir(), seen); err != nil {
		return s, err
	}
	if cacheDir != "" {
		s.cache, err = allocated(cacheDir, seen)
	}
	return s, err
}

// slug makes a directory name of a row's label.
func slug(label string) string {
	return strings.Trim(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r - 'A' + 'a'
		}
		return '-'
	}, label), "-")
}
