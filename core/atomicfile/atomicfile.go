// Package atomicfile replaces a file whole or not at all: the appliance's
// readers (containerd and the kubelet reading their configuration, tests
// reading preseed's status) never see half a file. It must not create
// directories or choose permissions for its callers.
package atomicfile

import (
	"fmt"
	"os"
)

// Write writes data to path through path+".tmp" and a rename, so that path
// holds either its old content or all of data. The directory must exist.
func Write(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return fmt.Errorf("failed to write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("failed to rename %s to %s: %w", tmp, path, err)
	}
	return nil
}
