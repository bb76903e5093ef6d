package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/datapartition"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/systemimage"
)

const (
	// mke2fsPath is the mke2fs the system image ships (third_party/e2fsprogs).
	mke2fsPath = "/usr/sbin/mke2fs"
	// stateDir, where the data partition is mounted, is containerd's root.
	stateDir = node.ContainerdRoot
)

// mountDataPartition mounts the data partition of the disk the system was
// booted from at containerd's root, adding and formatting it at first boot
// (core/datapartition). It returns the partition's device, or "" when the
// appliance did not boot from a disk (no system image on the command line).
// Any failure is the boot's: a disk too small, or a partition that does not
// mount, is never formatted over.
func mountDataPartition(ctx context.Context, logger *zap.Logger) (string, error) {
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return "", fmt.Errorf("failed to read the kernel command line: %w", err)
	}
	info, disk, err := systemimage.FromKernelArgs(strings.Fields(string(cmdline)))
	if err != nil || !disk {
		return "", err
	}
	guid, err := systemimage.PartitionGUID(info.RootHash)
	if err != nil {
		return "", err
	}
	_, bootDisk, err := findPartition(ctx, "/sys/block", "/dev", guid)
	if err != nil {
		return "", err
	}
	dev, err := datapartition.Ensure(ctx, logger, datapartition.Config{Disk: bootDisk, SysBlock: "/sys/block", Dev: "/dev", Mke2fs: mke2fsPath})
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(stateDir, 0o711); err != nil {
		return dev, fmt.Errorf("failed to create %s: %w", stateDir, err)
	}
	if err := unix.Mount(dev, stateDir, "ext4", unix.MS_NOATIME|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return dev, fmt.Errorf("failed to mount the data partition %s (ext4) at %s: %w; its data is left as it is", dev, stateDir, err)
	}
	return dev, nil
}
