// Package atomicfile replaces a file whole or not at all, and durably: the
// appliance's readers (containerd and the kubelet reading their
// configuration, tests reading preseed's status) never see half a file,
// and a file written before a power cut (the machine ID on the state disk)
// is there, whole, after it. It must not create directories or choose
// permissions for its callers.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Write writes data to path through path+".tmp" and a rename, so that path
// holds either its old content or all of data. The directory must exist.
// The data is synced before the rename and the directory after it: without
// the first, a power cut can leave the new name on an empty file (ext4
// commits the rename before the data); without the second, the old name.
func Write(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := writeSynced(tmp, data, perm); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("failed to rename %s to %s: %w", tmp, path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("failed to sync the directory of %s: %w", path, err)
	}
	return nil
}

// writeSynced writes data to a new file at path with exactly perm, and
// syncs it to disk.
func writeSynced(path string, data []byte, perm os.FileMode) error {
	// A file left by an interrupted write would keep its own mode.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", path, err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(perm) // the umask may have narrowed it
	}
	if werr == nil {
		werr = f.Sync()
	}
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return fmt.Errorf("failed to write %s: %w", path, werr)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
