package kubelet

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// Processes returns the IDs of the running processes whose executable is
// binary, found through <proc>/<pid>/exe (proc is "/proc" on the appliance),
// in ascending order. A process whose exe cannot be read (a kernel thread,
// a zombie, one that ended meanwhile) is skipped.
func Processes(proc, binary string) ([]int, error) {
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil, fmt.Errorf("failed to list %s: %w", proc, err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		// Kernel threads and zombies have no exe; a process may end meanwhile.
		if exe, err := os.Readlink(filepath.Join(proc, e.Name(), "exe")); err == nil && exe == binary {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids, nil
}
