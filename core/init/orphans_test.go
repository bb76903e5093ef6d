package main

import (
	"os"
	"slices"
	"testing"
)

// What PID 1 kills when a supervisor died: its daemons and their
// children, never itself, kernel threads, zombies, or the shims and the
// containers under them.
func TestLeftovers(t *testing.T) {
	procs := []proc{
		{pid: 1, ppid: 0, exe: "/init"},
		{pid: 2, ppid: 0},
		{pid: 3, ppid: 2},                               // kernel thread
		{pid: 40, ppid: 1, exe: "/usr/bin/containerd"},  // orphaned daemon
		{pid: 41, ppid: 40, exe: "/usr/bin/mkfs.erofs"}, // its child
		{pid: 50, ppid: 1, exe: "/usr/bin/kubelet"},     // orphaned daemon
		{pid: 60, ppid: 1, exe: "/usr/bin/containerd-shim-runc-v2"},
		{pid: 61, ppid: 60, exe: "/pause"},     // a pod's sandbox
		{pid: 62, ppid: 60, exe: "/hello-web"}, // a container
		{pid: 63, ppid: 62, exe: "/bin/sh"},    // its child
		{pid: 70, ppid: 1},                     // a zombie
	}
	if got, want := leftovers(procs), []int{40, 41, 50}; !slices.Equal(got, want) {
		t.Errorf("leftovers = %v, want %v", got, want)
	}
}

// A parent loop in a racy /proc read does not hang the walk.
func TestLeftoversParentLoop(t *testing.T) {
	procs := []proc{{pid: 10, ppid: 11, exe: "/a"}, {pid: 11, ppid: 10, exe: "/b"}}
	if got := leftovers(procs); !slices.Equal(got, []int{10, 11}) {
		t.Errorf("leftovers = %v, want [10 11]", got)
	}
}

// listProcs reads this test's own process from the real /proc.
func TestListProcsSeesItself(t *testing.T) {
	procs, err := listProcs("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if p.pid == os.Getpid() {
			if p.exe == "" || p.ppid == 0 {
				t.Errorf("own process read as %+v", p)
			}
			return
		}
	}
	t.Errorf("own pid %d not among %d processes", os.Getpid(), len(procs))
}
