package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/appliance-bundler/appliance/core/kmod"
	"github.com/appliance-bundler/appliance/core/supervisor"
)

const (
	// procFilesystems lists the file systems the kernel has.
	procFilesystems = "/proc/filesystems"
	// erofsUnavailableEnv carries PID 1's finding to the supervisor
	// process: why the kernel has no erofs, unset when it has.
	erofsUnavailableEnv = "APPLIANCE_EROFS_UNAVAILABLE"
)

// loadModules loads the configured kernel modules, then checks that the
// kernel has erofs, which every image layer is mounted with. It returns why
// not, logged once here, or "" when it has.
func loadModules(ctx context.Context, logger *zap.Logger) string {
	loadErr := kmod.LoadConfigured(ctx, logger, "/lib/modules", "/etc/modules-load.d")
	filesystems, err := os.ReadFile(procFilesystems)
	if err != nil {
		logger.Error("failed to read the kernel's file systems", zap.String("file", procFilesystems), zap.Error(err))
	}
	problem := erofsProblem(filesystems, loadErr)
	if problem != nil {
		// One line for erofs, which says what its failure costs; the
		// other modules' failures, if any, on the next.
		logger.Error("EROFS is unavailable; containerd will not start until it is", zap.Error(problem))
		loadErr = kmod.Without(loadErr, "erofs")
	}
	if loadErr != nil {
		logger.Error("failed to load kernel modules", zap.Error(loadErr))
	}
	if problem == nil {
		return ""
	}
	return problem.Error()
}

// erofsProblem says why erofs is not in filesystems (the content of
// /proc/filesystems) given loadErr, the error of loading the modules; nil
// when it is there.
func erofsProblem(filesystems []byte, loadErr error) error {
	if hasFilesystem(filesystems, "erofs") {
		return nil
	}
	var why error
	if f := kmod.Failure(loadErr, "erofs"); f != nil {
		why = f
	} else if loadErr != nil {
		why = fmt.Errorf("module erofs failed to load: %w", loadErr)
	} else {
		why = errors.New("module erofs failed to load: it loaded without error, yet erofs is not in " + procFilesystems)
	}
	return fmt.Errorf("%w; the erofs snapshotter cannot mount preseeded images, so no pod can start", why)
}

// hasFilesystem tells whether /proc/filesystems content lists fs: each line
// is an optional "nodev", a tab, the name.
func hasFilesystem(filesystems []byte, fs string) bool {
	sc := bufio.NewScanner(bytes.NewReader(filesystems))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && f[len(f)-1] == fs {
			return true
		}
	}
	return false
}

// erofsPoll is how often the gate looks again for erofs: a module loaded
// by hand lets containerd start within it.
const erofsPoll = 2 * time.Second

// every returns a wait for erofsGate: d, or less if ctx ends first.
func every(d time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}
}

// erofsGate runs run (containerd) only when the kernel has erofs, as listed
// in the file filesystems. Without it containerd's erofs snapshotter skips
// itself, the CRI plugin that needs it fails, and containerd exits on its own
// with a cause far from the reason. Instead the gate waits, looking again
// after each wait (every(erofsPoll)), and starts containerd once erofs is
// there. It says so once:
// PID 1 has logged the reason as an error (reason), so the gate adds one
// info line, and an error line only when PID 1 found nothing wrong. It
// never fails for it: a failing runnable would log its error again at
// every restart of the backoff, forever.
func erofsGate(run supervisor.Runnable, reason, filesystems string, wait func(context.Context) error) supervisor.Runnable {
	return func(ctx context.Context) error {
		logger := supervisor.Logger(ctx)
		for waited := false; ; waited = true {
			b, err := os.ReadFile(filesystems)
			if err != nil {
				return fmt.Errorf("failed to read %s: %w", filesystems, err)
			}
			if hasFilesystem(b, "erofs") {
				if waited {
					logger.Info("erofs is available now; starting containerd")
				}
				return run(ctx)
			}
			switch {
			case waited:
			case reason != "":
				logger.Info("containerd waits for erofs, which the kernel lacks (see PID 1's error)", zap.String("reason", reason))
			default:
				logger.Error("containerd not started: erofs is not in "+filesystems+"; waiting for it", zap.String("file", filesystems))
			}
			if err := wait(ctx); err != nil {
				return err
			}
		}
	}
}
