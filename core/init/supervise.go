package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"slices"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/containerd"
	"github.com/appliance-bundler/appliance/core/devmapper"
	"github.com/appliance-bundler/appliance/core/kubelet"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/preseed"
	"github.com/appliance-bundler/appliance/core/supervisor"
	"github.com/appliance-bundler/appliance/core/systemimage"
)

// sandboxImage is the pod sandbox image preseeded by //images:pause_bundle;
// containerd's CRI plugin uses and pins it.
const sandboxImage = "localhost/appliance/pause:1.0"

// preseedManifest is the build's manifest of the preseeded bundles
// (//images:preseed.json, placed by appliance_root): preseed refuses a
// bundle that is not in it or differs from it, so a bundle swapped or
// changed at rest is not imported.
const preseedManifest = bundleformat.ManifestPath

// kubeletWaitsForPreseed chooses the kubelet's start: false starts it as
// soon as containerd is healthy, overlapping its startup with the import;
// a pod whose image is not imported yet fails with ErrImageNeverPull
// (imagePullPolicy Never) and the kubelet retries it, so no pod fails for
// good. true starts it only once preseed's status says done. Measured to
// "hello-web answers" under TCG (//tests/e2e/staticpods, one boot each):
// false 30.5 s, true 32.2 s after QEMU start: with false the kubelet's own
// startup overlaps the import, so false is the faster.
const kubeletWaitsForPreseed = false

// kubeletConfig is the kubelet's configuration: its state on the state disk
// (mounted at containerd's root, statedisk.go) when there is one. run is
// false when the variant turns the kubelet off (only the E2E variant can).
func kubeletConfig(logger *zap.Logger) (c kubelet.Config, run bool) {
	// The read-only port, on loopback, is where the updater reads the
	// static pods' status (core/updater.Health).
	c = kubelet.Config{WaitForPreseed: kubeletWaitsForPreseed, ReadOnlyPort: kubelet.HealthReadOnlyPort}
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		logger.Error("failed to read mountinfo; the kubelet's state stays in memory", zap.Error(err))
	} else if points, err := mountsBelow(info, stateDir); err != nil {
		logger.Error("failed to parse mountinfo; the kubelet's state stays in memory", zap.Error(err))
	} else if slices.Contains(points, stateDir) {
		c.StateDir = filepath.Join(stateDir, "kubelet")
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		logger.Error("failed to read the kernel command line", zap.Error(err))
	}
	return c, variantKubelet(&c, string(cmdline))
}

// rootRunnable starts the node's runnables, each a group of its own: the
// device-mapper links before containerd, since containerd's dm-verity
// mounts wait for them (nothing else makes them: there is no udev), and
// containerd only when the kernel has erofs (erofsGate, with PID 1's reason
// erofsUnavailable).
func rootRunnable(cd containerd.Config, erofsUnavailable string) supervisor.Runnable {
	return func(ctx context.Context) error {
		// The dm-verity log names the layers of devices gone from sysfs
		// from what the links runnable recorded.
		dm := devmapper.NewRegistry()
		children := []struct {
			name string
			run  supervisor.Runnable
		}{
			{"devmapper", devmapper.Links{Registry: dm}.Run},
			{"verity-log", devmapper.VerityLog{Registry: dm, Cursor: devmapper.DefaultKmsgCursor, System: systemimage.DeviceName}.Run},
			{"containerd", erofsGate(cd.Run, erofsUnavailable, procFilesystems, every(erofsPoll))},
		}
		for _, c := range children {
			if err := supervisor.Run(ctx, c.name, c.run); err != nil {
				return err
			}
		}
		if up, ok := updaterRunnable(ctx); ok {
			if err := supervisor.Run(ctx, "updater", up); err != nil {
				return err
			}
		}
		for name, r := range variantRunnables() {
			if err := supervisor.Run(ctx, name, r); err != nil {
				return err
			}
		}
		supervisor.Signal(ctx, supervisor.SignalHealthy)
		supervisor.Signal(ctx, supervisor.SignalDone)
		return nil
	}
}

// supervise runs the supervisor tree until SIGTERM or SIGINT, then stops it
// and returns the process exit status.
func supervise(logger *zap.Logger) int {
	ctx, cancel := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer cancel()
	kc, runKubelet := kubeletConfig(logger)
	cd := containerd.Config{
		SandboxImage: sandboxImage,
		// preseed and the kubelet need containerd: they run under it and
		// restart with it. Each is a group of its own (containerd.Config's
		// Children): a kubelet that dies restarts alone, without running
		// preseed again, and a failed preseed run leaves the kubelet be.
		Children: map[string]supervisor.Runnable{
			"preseed": preseed.Config{Manifest: preseedManifest, RequireVerity: node.RequireVerity}.Run,
			"kubelet": kc.Run,
		},
	}
	if !runKubelet {
		logger.Warn("the kubelet is turned off on the kernel command line")
		delete(cd.Children, "kubelet")
	}
	root := rootRunnable(cd, os.Getenv(erofsUnavailableEnv))
	s := supervisor.New(ctx, logger, root)
	<-ctx.Done()
	logger.Info("stopping the supervisor tree")
	s.Wait()
	logger.Info("supervisor tree stopped")
	_ = logger.Sync()
	return 0
}
