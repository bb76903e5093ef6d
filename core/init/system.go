package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/go-dmverity/pkg/verity"
	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/blockdev"
	"github.com/appliance-bundler/appliance/core/kmod"
	"github.com/appliance-bundler/appliance/core/systemimage"
)

const (
	// systemRoot is where stage 1 mounts the system before it becomes
	// the root.
	systemRoot = "/sysroot"
	// partitionWait bounds how long the system partition may take to
	// appear once the block driver is loaded.
	partitionWait = 30 * time.Second
)

// findPartition returns the device of the partition whose GPT GUID is
// guid, on any disk of sysBlock (/sys/block) with its node in devDir, and
// the device of that disk, waiting until the kernel has made them or
// partitionWait has passed.
func findPartition(ctx context.Context, sysBlock, devDir, guid string) (part, disk string, err error) {
	ctx, cancel := context.WithTimeout(ctx, partitionWait)
	defer cancel()
	for {
		part, seen, err := partitionByGUID(sysBlock, devDir, guid)
		if part != "" || err != nil {
			return part, filepath.Join(devDir, seen[len(seen)-1]), err
		}
		select {
		case <-ctx.Done():
			return "", "", fmt.Errorf("no partition with GUID %s (the root hash's first half) on the disks %q after %s", guid, seen, partitionWait)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// partitionByGUID looks once; it returns the disks it read (the last one
// holds the partition when there is one), for the error when none holds
// it. A disk that cannot be read is skipped: it may not hold the system.
func partitionByGUID(sysBlock, devDir, guid string) (string, []string, error) {
	disks, err := blockdev.Disks(sysBlock)
	if err != nil {
		return "", nil, err
	}
	var seen []string
	for _, disk := range disks {
		n := gptPartitionNumber(filepath.Join(devDir, disk), guid)
		if n == 0 {
			seen = append(seen, disk)
			continue
		}
		if part := blockdev.Partition(sysBlock, disk, n); part != "" {
			return filepath.Join(devDir, part), append(seen, disk), nil
		}
		// In the table, but the kernel has not made its device yet.
		seen = append(seen, disk)
	}
	return "", seen, nil
}

// gptPartitionNumber is the number (from 1) of the partition with guid in
// the GPT of the disk at dev, or 0.
func gptPartitionNumber(dev, guid string) int {
	d, err := diskfs.Open(dev, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return 0
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		return 0
	}
	table, ok := pt.(*gpt.Table)
	if !ok {
		return 0
	}
	for _, p := range table.Partitions {
		if strings.EqualFold(p.GUID, guid) {
			// Its slot in the partition array: the kernel's number.
			return p.Index
		}
	}
	return 0
}

// openSystem puts a dm-verity device checked against info's root hash over
// the partition dev and returns its node in devDir. A first block that
// does not match the root hash is an error here, before anything mounts.
func openSystem(sysBlock, devDir, dev string, info systemimage.Info) (string, error) {
	root, err := hex.DecodeString(info.RootHash)
	if err != nil {
		return "", fmt.Errorf("root hash %q: %w", info.RootHash, err)
	}
	p := verity.DefaultParams()
	p.HashAreaOffset = info.HashOffset
	if _, err := verity.Open(&p, systemimage.DeviceName, dev, dev, root, "", nil); err != nil {
		return "", fmt.Errorf("failed to open %s through dm-verity (hash tree at byte %d): %w", dev, info.HashOffset, err)
	}
	if p.DataBlocks != info.DataBlocks() {
		return "", fmt.Errorf("the hash tree of %s covers %d blocks, the command line's hash offset %d", dev, p.DataBlocks, info.HashOffset)
	}
	// /dev/dm-N: there is no udev for /dev/mapper links this early.
	node, err := blockdev.DMNode(sysBlock, devDir, systemimage.DeviceName)
	if err != nil {
		return "", err
	}
	if err := readFirstBlock(node); err != nil {
		return "", fmt.Errorf("%s does not match the root hash %s on the kernel command line (dm-verity refuses its first block): %w", dev, info.RootHash, err)
	}
	return node, nil
}

func readFirstBlock(node string) error {
	f, err := os.Open(node)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.ReadFull(f, make([]byte, systemimage.BlockSize))
	return err
}

// mountSystem mounts the EROFS on node read-only at target.
func mountSystem(node, target string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("failed to create %s: %w", target, err)
	}
	if err := unix.Mount(node, target, "erofs", unix.MS_RDONLY|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("failed to mount the system (%s, erofs) at %s: %w", node, target, err)
	}
	return nil
}

// systemEnv marks the second start of PID 1: the system's /init, executed
// by the first stage from the UKI's initramfs.
const systemEnv = "APPLIANCE_SYSTEM=1"

// systemOnCmdline reads the system image the kernel command line names
// (core/systemimage), and whether it names one.
func systemOnCmdline() (systemimage.Info, bool, error) {
	cmdline, err := readCmdline()
	if err != nil {
		return systemimage.Info{}, false, err
	}
	return systemimage.FromKernelArgs(strings.Fields(cmdline))
}

// switchToSystem is stage 1 of a disk boot: from the small initramfs of
// the UKI, it loads the modules early boot needs, finds the system
// partition that the command line's root hash names, opens it through
// dm-verity, mounts its EROFS read-only and executes its /init as the new
// root. Nothing of the system is copied: its blocks are read, and checked
// against the hash tree, as they are used. It returns only on failure; the
// caller must not boot on.
func switchToSystem(ctx context.Context, logger *zap.Logger, info systemimage.Info) error {
	for _, m := range mounts()[:3] { // proc, sysfs, devtmpfs
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("failed to create %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("failed to mount %s at %s: %w", m.fstype, m.target, err)
		}
	}
	if err := kmod.LoadConfigured(ctx, logger, "/lib/modules", "/etc/modules-load.d"); err != nil {
		return fmt.Errorf("failed to load the modules of early boot: %w", err)
	}
	guid, err := systemimage.PartitionGUID(info.RootHash)
	if err != nil {
		return err
	}
	dev, _, err := findPartition(ctx, "/sys/block", "/dev", guid)
	if err != nil {
		return err
	}
	node, err := openSystem("/sys/block", "/dev", dev, info)
	if err != nil {
		return err
	}
	if err := mountSystem(node, systemRoot); err != nil {
		return err
	}
	logger.Info("system mounted", zap.String("partition", dev), zap.String("device", node), zap.String("root_hash", info.RootHash))
	return enterSystem()
}

// enterSystem makes systemRoot the root and executes its /init. /dev moves
// with it (the dm-verity node is there); the system's init mounts proc and
// sysfs again. The initramfs's files are removed first: nothing of them is
// used after the exec, and their memory is freed.
func enterSystem() error {
	if err := unix.Mount("/dev", filepath.Join(systemRoot, "dev"), "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("failed to move /dev into the system: %w", err)
	}
	for _, m := range []string{"/proc", "/sys"} {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("failed to unmount %s: %w", m, err)
		}
	}
	if err := removeInitramfs("/"); err != nil {
		return err
	}
	if err := os.Chdir(systemRoot); err != nil {
		return fmt.Errorf("failed to enter %s: %w", systemRoot, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("failed to move the system over /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("failed to chroot into the system: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("failed to enter the system's root: %w", err)
	}
	return unix.Exec("/init", os.Args, append(os.Environ(), systemEnv))
}

// removeInitramfs removes every entry below root on root's own file system,
// leaving what is mounted on it (the system) alone.
func removeInitramfs(root string) error {
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		return fmt.Errorf("failed to stat %s: %w", root, err)
	}
	return removeOnDevice(root, st.Dev)
}

func removeOnDevice(dir string, dev uint64) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("failed to list %s: %w", dir, err)
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("failed to stat %s: %w", p, err)
		}
		if st.Dev != dev {
			continue
		}
		if e.IsDir() {
			if err := removeOnDevice(p, dev); err != nil {
				return err
			}
		}
		if err := os.Remove(p); err != nil && !(e.IsDir() && errors.Is(err, unix.EBUSY)) {
			return fmt.Errorf("failed to remove %s from the initramfs: %w", p, err)
		}
	}
	return nil
}

// readCmdline reads the kernel command line before /proc is mounted: from
// a proc mounted for the purpose, and unmounted before the copy walks the
// tree.
func readCmdline() (string, error) {
	dir, err := os.MkdirTemp("/", ".proc-")
	if err != nil {
		return "", fmt.Errorf("failed to create a mount point for proc: %w", err)
	}
	defer os.Remove(dir)
	if err := unix.Mount("proc", dir, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "", fmt.Errorf("failed to mount proc at %s: %w", dir, err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return "", fmt.Errorf("failed to read the kernel command line: %w", err)
	}
	return string(b), nil
}
