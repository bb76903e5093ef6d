package importtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/bazelbuild/rules_go/go/runfiles"
	"github.com/containerd/containerd/v2/client"
)

// A small containerd starter for this test alone. core/containerd has a
// shared one in progress (containerdtest); it did not build yet when this
// was written, so this test does not depend on it.

// daemon is a containerd started by the test.
type daemon struct {
	Address, Snapshotter string
	exited               chan struct{}
}

func binary(t *testing.T, env string) string {
	t.Helper()
	loc := os.Getenv(env)
	p, err := runfiles.Rlocation(loc)
	if err != nil || loc == "" {
		t.Fatalf("$%s not in runfiles (%v): run with bazel test", env, err)
	}
	return p
}

// probeSnapshotter picks overlayfs if an overlay mount works under dir,
// else native (e.g. when dir is itself on overlayfs).
func probeSnapshotter(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "probe")
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(p, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work", p, p, p)
	if err := syscall.Mount("overlay", filepath.Join(p, "merged"), "overlay", 0, opts); err != nil {
		t.Logf("overlay mount failed (%v): using the native snapshotter", err)
		return "native"
	}
	_ = syscall.Unmount(filepath.Join(p, "merged"), 0)
	return "overlayfs"
}

// startContainerd starts containerd on fresh directories with a config of
// only what the import needs (no CRI), and stops it when the test ends.
func startContainerd(t *testing.T) *daemon {
	t.Helper()
	dir := t.TempDir()
	// A Unix socket path must fit in 108 bytes; Bazel's test directories
	// are longer.
	sockDir, err := os.MkdirTemp("/tmp", "ocitest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	d := &daemon{Address: filepath.Join(sockDir, "containerd.sock"), Snapshotter: probeSnapshotter(t, dir), exited: make(chan struct{})}
	config := fmt.Sprintf(`version = 3
root = %q
state = %q
# No CRI, no runtime; and only the snapshotters wanted: one that fails to
# load (btrfs off btrfs) takes the metadata store down with it.
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs"]

[grpc]
  address = %q

[plugins."io.containerd.transfer.v1.local"]
  unpack_config = [{platform = %q, snapshotter = %q}]
`, filepath.Join(dir, "root"), filepath.Join(sockDir, "state"), d.Address, runtime.GOOS+"/"+runtime.GOARCH, d.Snapshotter)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(binary(t, "CONTAINERD"), "--config", cfgPath, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("failed to start containerd: %v", err)
	}
	go func() { _ = cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("containerd output:\n%s", out.String())
		}
	})
	// A guard, not an expectation: containerd starts in well under a second.
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-d.exited:
			t.Fatalf("containerd exited at start:\n%s", out.String())
		default:
		}
		if err := ping(d.Address); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer within 60s (%v):\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("containerd serving at %s, snapshotter %s", d.Address, d.Snapshotter)
	return d
}

func ping(address string) error {
	if _, err := os.Stat(address); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.New(address, client.WithTimeout(5*time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Version(ctx)
	return err
}

// client returns a client of the daemon, closed when the test ends.
func (d *daemon) Client(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(d.Address)
	if err != nil {
		t.Fatalf("failed to connect to containerd at %s: %v", d.Address, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
