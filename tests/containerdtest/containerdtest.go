// Package containerdtest starts a real containerd for tests: the Bazel-built
// static binary, as root, on a temporary root with its own socket, stopped
// when the test ends.
//
// Use it from a go_test with
//
//	data = ["//third_party/containerd:containerd"],
//	env = {"CONTAINERD": "$(rlocationpath //third_party/containerd:containerd)"},
//
// then d := containerdtest.Start(t) and d.Client(t). The snapshotter is
// overlayfs where the kernel can mount it on the test's directory, else
// native (the choice is logged and in Daemon.Snapshotter).
//
// It must not be used outside tests and test tools (Launch serves the preseed
// bench): it calls t.Fatal and kills processes.
package containerdtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/containerd"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/supervisor"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// EnvBinary names the environment variable with the rlocation path of the
// containerd binary.
const EnvBinary = "CONTAINERD"

const (
	// startTimeout is a guard, not an expectation: containerd starts in well
	// under a second.
	startTimeout = 60 * time.Second
	// stopGrace is how long containerd gets between SIGTERM and SIGKILL.
	stopGrace = 10 * time.Second
)

// Daemon is a running test containerd.
type Daemon struct {
	// Config is what it was started with (paths, snapshotter).
	Config containerd.Config
	// Address is its socket, Snapshotter the one its CRI plugin uses.
	Address, Snapshotter string
	cmd                  *exec.Cmd
	stop                 context.CancelFunc // ends cmd's context
	exited               chan struct{}      // closed when cmd.Wait has returned
}

// ProbeSnapshotter returns "overlayfs" if an overlay mount works in dir (the
// filesystem containerd's root will be on), else "native".
func ProbeSnapshotter(t testing.TB, dir string) string {
	t.Helper()
	if err := OverlayWorks(dir); err != nil {
		t.Logf("overlay mount on %s failed (%v): using the native snapshotter", dir, err)
		return "native"
	}
	return "overlayfs"
}

// OverlayWorks mounts and unmounts an overlay in a scratch directory under
// dir; nil means the overlayfs snapshotter can run there.
func OverlayWorks(dir string) error {
	p, err := os.MkdirTemp(dir, "overlay-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(p)
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(p, d), 0o700); err != nil {
			return err
		}
	}
	opts := "lowerdir=" + filepath.Join(p, "lower") + ",upperdir=" + filepath.Join(p, "upper") + ",workdir=" + filepath.Join(p, "work")
	merged := filepath.Join(p, "merged")
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return err
	}
	return unix.Unmount(merged, 0)
}

// NewConfig returns a containerd configuration with every path in a fresh
// temporary directory. The socket is under /tmp because a Unix socket path
// must fit in 108 bytes and Bazel's test directories are longer.
func NewConfig(t testing.TB) containerd.Config {
	t.Helper()
	// Bazel's TEST_TMPDIR is on the output base's filesystem: the one the
	// snapshotter is probed on.
	dir, err := os.MkdirTemp(os.Getenv("TEST_TMPDIR"), "containerd-")
	if err != nil {
		t.Fatalf("failed to create containerd's directory: %v", err)
	}
	t.Cleanup(func() { removeAll(t, dir) })
	sock, err := os.MkdirTemp("/tmp", "ctrd-")
	if err != nil {
		t.Fatalf("failed to create socket directory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	return containerd.Config{
		Binary:      runfile.Path(t, EnvBinary),
		Root:        filepath.Join(dir, "root"),
		State:       filepath.Join(sock, "state"),
		Address:     filepath.Join(sock, "containerd.sock"),
		ConfigPath:  filepath.Join(dir, "config.toml"),
		Snapshotter: ProbeSnapshotter(t, dir),
		// NRI listens on one fixed socket per machine: test containerds
		// running at once would fight over it.
		DisabledPlugins: append(containerd.DefaultDisabledPlugins(), "io.containerd.nri.v1.nri"),
	}
}

// NewErofsConfig is NewConfig with the erofs snapshotter serving the layer
// content cache cacheDir. dm-verity is off: the hosts tests run on load no
// dm_verity module. The erofs differ needs mkfs.erofs on PATH (the
// toolchain root of tools/bazel has it).
func NewErofsConfig(t testing.TB, cacheDir string) containerd.Config {
	t.Helper()
	cfg := NewConfig(t)
	cfg.Snapshotter = node.ErofsSnapshotter
	cfg.LayerContentCaches = []string{cacheDir}
	cfg.DmverityMode = "off"
	return cfg
}

// Start starts containerd with NewConfig's configuration and waits for its
// API. It is stopped (SIGTERM, then SIGKILL) when the test ends; its output
// is in the test log if the test failed.
func Start(t testing.TB) *Daemon {
	t.Helper()
	return StartConfig(t, NewConfig(t))
}

// StartConfig is Start with a given configuration.
func StartConfig(t testing.TB, cfg containerd.Config) *Daemon {
	t.Helper()
	// exec writes to out from a goroutine of its own until containerd has
	// exited: read it only after Stop.
	var out bytes.Buffer
	d, err := Launch(cfg, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, tail(out.String(), 80))
	}
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			t.Logf("containerd output:\n%s", tail(out.String(), 80))
		}
	})
	t.Logf("containerd %d serving at %s, snapshotter %s", d.cmd.Process.Pid, cfg.Address, cfg.Snapshotter)
	return d
}

// Launch is StartConfig for a program that is not a test (the preseed
// bench): it creates containerd's directories, writes its configuration,
// starts it with its output to out, and waits for its API. The caller must
// Stop it; on an error it is already stopped.
func Launch(cfg containerd.Config, out io.Writer) (*Daemon, error) {
	for _, d := range []string{cfg.Root, cfg.State} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("failed to create %s: %w", d, err)
		}
	}
	if err := cfg.WriteConfig(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{Config: cfg, Address: cfg.Address, Snapshotter: cfg.Snapshotter, stop: cancel, exited: make(chan struct{})}
	d.cmd = cfg.Command(ctx)
	// Its own process group, as on the appliance: a stop reaches nothing
	// of the caller's, and nothing of it outlives the test.
	supervisor.Isolate(d.cmd, syscall.SIGTERM)
	d.cmd.WaitDelay = stopGrace
	d.cmd.Stdout, d.cmd.Stderr = out, out
	if err := d.cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("failed to start containerd: %w", err)
	}
	go func() {
		_ = d.cmd.Wait()
		_ = supervisor.KillGroup(d.cmd)
		close(d.exited)
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), startTimeout)
	defer wcancel()
	if err := containerd.WaitReady(wctx, cfg.Address, d.exited); err != nil {
		d.Stop()
		return nil, fmt.Errorf("containerd did not start: %w", err)
	}
	return d, nil
}

// Stop stops containerd (SIGTERM, then SIGKILL after a grace period) and
// waits for it to exit and its output to be written. Safe to call twice.
func (d *Daemon) Stop() {
	d.stop()
	<-d.exited
}

// Client returns a client of the daemon, closed when the test ends.
func (d *Daemon) Client(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.New(d.Address)
	if err != nil {
		t.Fatalf("failed to connect to containerd at %s: %v", d.Address, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// removeAll removes a containerd root after unmounting whatever containerd
// left mounted under it (a killed containerd leaves snapshot mounts).
func removeAll(t testing.TB, dir string) {
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
				_ = unix.Unmount(f[4], unix.MNT_DETACH)
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Logf("failed to remove %s: %v", dir, err)
	}
}
