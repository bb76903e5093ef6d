package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/node"
)

const (
	// stateDiskParam on the kernel command line names a block device with
	// an ext4 filesystem to hold containerd's state across boots, e.g.
	// appliance.state_disk=/dev/vda. Without it the state is on tmpfs.
	stateDiskParam = "appliance.state_disk="
	// stateDir, where the state disk is mounted, is containerd's root.
	stateDir = node.ContainerdRoot
	// deviceWait bounds how long the device may take to appear after its
	// driver module is loaded.
	deviceWait = 10 * time.Second
)

// stateDisk returns the device named on the kernel command line, if any.
func stateDisk(cmdline string) string {
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, stateDiskParam); ok {
			return v
		}
	}
	return ""
}

// mountStateDisk mounts the state disk named on the kernel command line at
// containerd's root. It returns the device ("" for none).
func mountStateDisk() (string, error) {
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return "", fmt.Errorf("failed to read the kernel command line: %w", err)
	}
	dev := stateDisk(string(cmdline))
	if dev == "" {
		return "", nil
	}
	for deadline := time.Now().Add(deviceWait); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(dev); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return dev, fmt.Errorf("state disk %s is not there: %w", dev, err)
		}
	}
	if err := os.MkdirAll(stateDir, 0o711); err != nil {
		return dev, fmt.Errorf("failed to create %s: %w", stateDir, err)
	}
	if err := unix.Mount(dev, stateDir, "ext4", unix.MS_NOATIME, ""); err != nil {
		return dev, fmt.Errorf("failed to mount state disk %s (ext4) at %s: %w", dev, stateDir, err)
	}
	return dev, nil
}
