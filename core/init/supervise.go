package main

import (
	"context"
	"os/signal"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/containerd"
	"github.com/appliance-bundler/appliance/core/preseed"
	"github.com/appliance-bundler/appliance/core/supervisor"
)

// sandboxImage is the pod sandbox image preseeded by //images:pause_bundle;
// containerd's CRI plugin uses and pins it.
const sandboxImage = "localhost/appliance/pause:1.0"

// preseedManifest is the build's manifest of the preseeded bundles
// (//images:preseed_json, placed by appliance_initramfs): preseed refuses a
// bundle that is not in it or differs from it, so a bundle swapped or
// changed at rest is not imported.
const preseedManifest = bundleformat.ManifestPath

// supervise runs the supervisor tree until SIGTERM or SIGINT, then stops it
// and returns the process exit status.
func supervise(logger *zap.Logger) int {
	ctx, cancel := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer cancel()
	cd := containerd.Config{
		SandboxImage: sandboxImage,
		// preseed needs containerd: it runs under it and restarts with it.
		Children: map[string]supervisor.Runnable{"preseed": preseed.Config{Manifest: preseedManifest}.Run},
	}
	root := func(ctx context.Context) error {
		if err := supervisor.Run(ctx, "containerd", cd.Run); err != nil {
			return err
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
	s := supervisor.New(ctx, logger, root)
	<-ctx.Done()
	logger.Info("stopping the supervisor tree")
	s.Wait()
	logger.Info("supervisor tree stopped")
	_ = logger.Sync()
	return 0
}
