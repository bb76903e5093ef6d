package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// switchedEnv marks the second start of PID 1, after switchRoot.
const switchedEnv = "APPLIANCE_ROOT_SWITCHED=1"

// newRoot is where the tmpfs root is built before it replaces the initramfs.
const newRoot = "/.newroot"

// switchRoot copies the initramfs into a tmpfs and makes that the root, then
// executes init again from it. runc puts containers in place with
// pivot_root(2), which the kernel refuses while the root is the initramfs
// (rootfs cannot be unmounted); a tmpfs root works, and the copy costs
// about one second for the whole image. The initramfs files are removed
// while copying, so memory use stays about the same.
//
// A failure leaves the initramfs half-emptied: the caller must not boot on.
func switchRoot() error {
	opts := "mode=0755"
	cmdline, err := readCmdline()
	if err != nil {
		return err
	}
	if size := rootSize(cmdline); size != "" {
		opts += ",size=" + size
	}
	if err := os.Mkdir(newRoot, 0o755); err != nil {
		return fmt.Errorf("failed to create %s: %w", newRoot, err)
	}
	if err := unix.Mount("tmpfs", newRoot, "tmpfs", 0, opts); err != nil {
		return fmt.Errorf("failed to mount the tmpfs root (%s): %w", opts, err)
	}
	if err := moveTree("/", newRoot); err != nil {
		return fmt.Errorf("failed to copy the initramfs into the tmpfs root (%s): %w", opts, err)
	}
	if err := os.Chdir(newRoot); err != nil {
		return fmt.Errorf("failed to enter %s: %w", newRoot, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("failed to move the tmpfs root over /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("failed to chroot into the tmpfs root: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("failed to enter the new root: %w", err)
	}
	return unix.Exec("/init", os.Args, append(os.Environ(), switchedEnv))
}

// rootSizeArg on the kernel command line sets the size of the tmpfs root
// (tmpfs's size=, e.g. 512M or 50%); the kernel's default is half the RAM.
const rootSizeArg = "appliance.root_size="

// rootSize is the value of rootSizeArg on cmdline, or "".
func rootSize(cmdline string) string {
	size := ""
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, rootSizeArg); ok {
			size = v
		}
	}
	return size
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

// moveTree copies every entry of the initramfs below dst and removes the
// originals (files as soon as they are copied).
func moveTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("failed to walk the initramfs at %s: %w", path, err)
		}
		if path == dst {
			return filepath.SkipDir
		}
		if path == src {
			return nil
		}
		target := filepath.Join(dst, path)
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("failed to stat %s: %w", path, err)
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("no stat data for %s", path)
		}
		mode := info.Mode()
		switch {
		case mode.IsDir():
			if err := os.Mkdir(target, mode.Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("failed to create %s: %w", target, err)
			}
			return unix.Chmod(target, st.Mode&07777)
		case mode&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return fmt.Errorf("failed to read link %s: %w", path, err)
			}
			if err := os.Symlink(link, target); err != nil {
				return fmt.Errorf("failed to create link %s: %w", target, err)
			}
		case mode.IsRegular():
			if err := copyFile(path, target, st.Mode&07777); err != nil {
				return err
			}
		default:
			if err := unix.Mknod(target, st.Mode, int(st.Rdev)); err != nil {
				return fmt.Errorf("failed to create node %s: %w", target, err)
			}
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("failed to remove %s from the initramfs: %w", path, err)
		}
		return nil
	})
}

func copyFile(src, dst string, perm uint32) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, os.FileMode(perm))
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("failed to copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", dst, err)
	}
	return unix.Chmod(dst, perm)
}
