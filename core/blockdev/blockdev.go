// Package blockdev finds the kernel's block devices by what sysfs says of
// them, as udev would on a distribution (the appliance has none, and its
// first stage runs before anything could): the disks that may hold a
// partition table, a disk's partition by its number, a device-mapper
// device by its name. Device nodes are devtmpfs's.
//
// It must not create, change or remove devices or nodes.
package blockdev

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Partition is the kernel's name of partition n of disk (a /sys/block
// entry of sysBlock, e.g. "vda"), or "" while the kernel has none.
func Partition(sysBlock, disk string, n int) string {
	dir := filepath.Join(sysBlock, disk)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "partition"))
		if err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(n) {
			return e.Name()
		}
	}
	return ""
}

// DMNode is the node in devDir of the device-mapper device called name
// (/dev/dm-N), or an error when sysBlock has none.
func DMNode(sysBlock, devDir, name string) (string, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", fmt.Errorf("failed to list %s: %w", sysBlock, err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "dm", "name"))
		if err == nil && strings.TrimSpace(string(b)) == name {
			return filepath.Join(devDir, e.Name()), nil
		}
	}
	return "", fmt.Errorf("the dm device %s is not in %s", name, sysBlock)
}

// Disks lists the disks of sysBlock that may hold a partition table: not
// loop, RAM, device-mapper, zram or optical devices.
func Disks(sysBlock string) ([]string, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("failed to list the disks in %s: %w", sysBlock, err)
	}
	var disks []string
	for _, e := range entries {
		virtual := false
		for _, p := range []string{"loop", "ram", "dm-", "zram", "sr"} {
			virtual = virtual || strings.HasPrefix(e.Name(), p)
		}
		if !virtual {
			disks = append(disks, e.Name())
		}
	}
	return disks, nil
}
