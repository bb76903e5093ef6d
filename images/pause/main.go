// Command pause is the pod sandbox's process: it holds the pod's namespaces
// by doing nothing, reaps the zombies that are reparented to it (it is PID 1
// of the pod's PID namespace when that is shared) and exits 0 on SIGINT or
// SIGTERM. It writes only two lines to stderr: when its signal handlers
// are ready and why it exits. It must not start processes or read files.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Buffered: signals that arrive while reaping are not dropped (SIGCHLD
	// may still be coalesced by the kernel; reap loops until nothing is left).
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	// Said once the handlers are in place: until then SIGINT or SIGTERM
	// would kill it with the signal instead of a clean exit, so a
	// supervisor (or a test) can wait for this line.
	fmt.Fprintln(os.Stderr, "pause: ready")
	// Children that exited before the handler was installed sent their
	// SIGCHLD to nobody.
	reap()
	for s := range sigs {
		if s == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "pause: %v, exiting\n", s)
		os.Exit(0)
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
