package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/supervisor"
	"github.com/appliance-bundler/appliance/core/systemimage"
	"github.com/appliance-bundler/appliance/core/updatepayload"
	"github.com/appliance-bundler/appliance/core/updater"
	"github.com/appliance-bundler/appliance/core/updater/config"
	"github.com/appliance-bundler/appliance/core/updater/status"
)

// osRelease is the system's os-release: IMAGE_VERSION is the running
// version (build/appliance's os_release).
const osRelease = "/etc/os-release"

// espMount is where the updater mounts the ESP.
const espMount = "/run/esp"

// updaterRunnable is the updater (core/updater) when the system has an
// update configuration (config.Path), and not ok when it has none. A
// configuration that is there but unusable is a runnable that fails with
// why, so that the supervisor logs it and retries.
func updaterRunnable(ctx context.Context) (supervisor.Runnable, bool) {
	if _, err := os.Stat(config.Path); errors.Is(err, fs.ErrNotExist) {
		supervisor.Logger(ctx).Info("no update configuration: no updater", zap.String("path", config.Path))
		return nil, false
	}
	u, err := newUpdater()
	if err != nil {
		return func(context.Context) error { return err }, true
	}
	return u.Run, true
}

func newUpdater() (updater.Updater, error) {
	u := updater.Updater{
		SysBlock: "/sys/block", DevDir: "/dev", ESPMount: espMount,
		StatusPath: status.Path, Health: updater.DefaultHealth(),
		Uptime: uptime,
		Reboot: func() error { return unix.Kill(1, rebootSignal) },
	}
	var err error
	if u.Config, err = config.Read(config.Path); err != nil {
		return u, err
	}
	key, err := os.ReadFile(config.KeyPath)
	if err != nil {
		return u, fmt.Errorf("the update key: %w", err)
	}
	if u.Key, err = updatepayload.ParsePublicKey(key); err != nil {
		return u, fmt.Errorf("the update key %s: %w", config.KeyPath, err)
	}
	if u.Version, err = imageVersion(osRelease); err != nil {
		return u, err
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return u, err
	}
	info, ok, err := systemimage.FromKernelArgs(strings.Fields(string(cmdline)))
	if err == nil && !ok {
		err = errors.New("the kernel command line names no system image")
	}
	u.System = info
	return u, err
}

// imageVersion reads the running version from an os-release file.
func imageVersion(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	v, err := updatepayload.OSReleaseVersion(b)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// uptime is the time since the kernel started (CLOCK_BOOTTIME).
func uptime() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, err
	}
	return time.Duration(ts.Nano()), nil
}
