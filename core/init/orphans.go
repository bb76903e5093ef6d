package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

const (
	// shimPrefix starts the executable name of containerd's shims. They
	// and the containers under them outlive containerd by design (a new
	// containerd reconnects to them), so they outlive a supervisor too.
	shimPrefix = "containerd-shim"
	// orphanWait bounds how long PID 1 waits for a dead supervisor's
	// processes to die before it starts the next supervisor anyway.
	orphanWait = 30 * time.Second
)

// proc is one process, as /proc shows it.
type proc struct {
	pid, ppid int
	exe       string // empty for a kernel thread or a zombie
}

// leftovers are the processes a dead supervisor may have left: every
// process but PID 1, kernel threads (children of kthreadd, pid 2) and
// zombies, containerd's shims and their descendants (the pods).
func leftovers(procs []proc) []int {
	byPid := make(map[int]proc, len(procs))
	for _, p := range procs {
		byPid[p.pid] = p
	}
	underShim := func(p proc) bool {
		for seen := 0; seen < len(procs) && p.pid > 1; seen++ {
			if strings.HasPrefix(filepath.Base(p.exe), shimPrefix) {
				return true
			}
			if p = byPid[p.ppid]; p.pid == 0 {
				return false
			}
		}
		return false
	}
	var out []int
	for _, p := range procs {
		if p.pid <= 2 || p.ppid == 2 || p.exe == "" || underShim(p) {
			continue
		}
		out = append(out, p.pid)
	}
	return out
}

// listProcs reads every process of procRoot ("/proc"); one that ends
// meanwhile is left out.
func listProcs(procRoot string) ([]proc, error) {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("failed to list %s: %w", procRoot, err)
	}
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		f := strings.Fields(string(stat[i+1:]))
		if i < 0 || len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		exe, _ := os.Readlink(filepath.Join(procRoot, e.Name(), "exe"))
		out = append(out, proc{pid: pid, ppid: ppid, exe: exe})
	}
	return out, nil
}

// killLeftovers kills what a dead supervisor process left running (its
// daemons' process groups die with it by Pdeathsig, but a grandchild may
// not) and reaps it, so that the next supervisor meets no second
// containerd on its root and no second kubelet on its ports. It returns
// once none is left, or after orphanWait with an error naming those
// still there.
func killLeftovers(logger *zap.Logger, procRoot string) error {
	deadline := time.Now().Add(orphanWait)
	for {
		procs, err := listProcs(procRoot)
		if err != nil {
			return err
		}
		left := leftovers(procs)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of the dead supervisor still run after %s: %v", orphanWait, left)
		}
		for _, pid := range left {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				logger.Warn("failed to kill a process of the dead supervisor", zap.Int("pid", pid), zap.Error(err))
			}
		}
		reapAll()
		// A killed process is gone once reaped; one not yet dead is
		// looked at again.
		time.Sleep(20 * time.Millisecond)
	}
}
