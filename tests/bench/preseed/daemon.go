package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/containerd"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/tests/containerdtest"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// dmVerityModule is where containerd looks for dm-verity support; without
// it the erofs snapshotter refuses dmverity_mode "on".
const dmVerityModule = "/sys/module/dm_verity"

// env is what every measurement shares: the binaries, the work directory
// and the containerd configurations of the two snapshotters.
type env struct {
	ctrdBin, ctrBin, work string
	keep                  bool
	// overlay is the configuration of the ctr and overlayfs rows (overlayfs,
	// or native where overlay cannot mount), erofs the zero-copy row's.
	overlay, erofs containerd.Config
	// dmverityWhy says why erofs.DmverityMode is what it is.
	dmverityWhy string
}

func setUp(keep bool) (*env, error) {
	ctrdBin, err := runfile.Lookup("CONTAINERD")
	if err != nil {
		return nil, err
	}
	ctrBin, err := runfile.Lookup("CTR")
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("/var/tmp", "preseed-bench-")
	if err != nil {
		return nil, fmt.Errorf("failed to create the work directory: %w", err)
	}
	e := &env{ctrdBin: ctrdBin, ctrBin: ctrBin, work: work, keep: keep}
	e.overlay.Snapshotter = "overlayfs"
	if err := containerdtest.OverlayWorks(work); err != nil {
		fmt.Printf("overlay mount failed on %s (%v): using native\n", work, err)
		e.overlay.Snapshotter = "native"
	}
	e.erofs.Snapshotter = node.ErofsSnapshotter
	// The appliance's mode: its cache has no sidecars (the system
	// partition's dm-verity covers it), so the import and the mounts read
	// no hash tree either way.
	e.erofs.DmverityMode = node.DmverityMode
	e.dmverityWhy = "the appliance's: the tree's cache has no sidecars"
	if _, err := os.Stat(dmVerityModule); err != nil {
		// containerd's differ formats with dm-verity unless "off", which
		// needs the module; no bundle here is converted on the node.
		e.erofs.DmverityMode = "off"
		e.dmverityWhy = "this kernel has no dm_verity (no " + dmVerityModule + "),\n" +
			"    which containerd's differ needs unless \"off\"; the cache has no sidecars either way"
	}
	return e, nil
}

func (e *env) close() {
	if e.keep {
		fmt.Println("work directory kept:", e.work)
		return
	}
	cleanup(e.work)
}

// daemon is one containerd of the bench, started and stopped by
// containerdtest, with its output in dir/containerd.log.
type daemon struct {
	cfg containerd.Config
	d   *containerdtest.Daemon
	log *os.File
	// pid is containerd's, from its introspection service.
	pid uint64
}

// start starts containerd with the settings of tmpl on the directory dir
// (its root and configuration; the same dir again is a reboot).
func (e *env) start(ctx context.Context, dir string, tmpl containerd.Config) (*daemon, error) {
	sock, err := os.MkdirTemp("/tmp", "ctrd-bench-")
	if err != nil {
		return nil, err
	}
	cfg := tmpl
	cfg.Binary, cfg.Root, cfg.State = e.ctrdBin, filepath.Join(dir, "root"), filepath.Join(sock, "state")
	cfg.Address, cfg.ConfigPath = filepath.Join(sock, "containerd.sock"), filepath.Join(dir, "config.toml")
	// NRI listens on one fixed socket per machine: the tests others run
	// here at the same time start containerds too.
	cfg.DisabledPlugins = append(containerd.DefaultDisabledPlugins(), "io.containerd.nri.v1.nri")
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, err
	}
	log, err := os.OpenFile(filepath.Join(dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	d, err := containerdtest.Launch(cfg, log)
	if err != nil {
		log.Close()
		os.RemoveAll(sock)
		return nil, fmt.Errorf("containerd (log in %s): %w", dir, err)
	}
	dm := &daemon{cfg: cfg, d: d, log: log}
	if dm.pid, err = serverPID(ctx, cfg.Address); err != nil {
		dm.stop()
		return nil, err
	}
	return dm, nil
}

func serverPID(ctx context.Context, address string) (uint64, error) {
	c, err := client.New(address)
	if err != nil {
		return 0, fmt.Errorf("failed to connect to containerd at %s: %w", address, err)
	}
	defer c.Close()
	r, err := c.IntrospectionService().Server(ctx)
	if err != nil {
		return 0, fmt.Errorf("failed to ask containerd for its pid: %w", err)
	}
	return r.Pid, nil
}

func (d *daemon) stop() {
	d.d.Stop()
	d.log.Close()
	os.RemoveAll(filepath.Dir(d.cfg.Address))
}

// dir is the containerd's root; content and snapshotter dirs are under it.
func (d *daemon) contentDir() string {
	return filepath.Join(d.cfg.Root, "io.containerd.content.v1.content")
}
func (d *daemon) snapshotsDir() string {
	return filepath.Join(d.cfg.Root, "io.containerd.snapshotter.v1."+d.cfg.Snapshotter)
}

// checkCount fails unless containerd has exactly n bench images by their
// names (preseed also registers each under repo@digest).
func checkCount(ctx context.Context, address string, n int) error {
	c, err := client.New(address)
	if err != nil {
		return err
	}
	defer c.Close()
	imgs, err := c.ImageService().List(namespaces.WithNamespace(ctx, ns), `name~="^preseed.test/bench-[0-9]+:1$"`)
	if err != nil {
		return err
	}
	if len(imgs) != n {
		return fmt.Errorf("%d bench images in containerd, want %d", len(imgs), n)
	}
	return nil
}

// cleanup unmounts what containerd left mounted, then removes the work
// directory.
func cleanup(dir string) {
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
				_ = unix.Unmount(f[4], unix.MNT_DETACH)
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(os.Stderr, "bench: failed to clean up:", err)
	}
}
