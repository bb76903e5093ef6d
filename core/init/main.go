// Command init is the appliance's PID 1. It runs in two roles:
//
//   - As PID 1, first from the UKI's small initramfs, it opens the system
//     partition that the command line's root hash names through dm-verity
//     and executes the system's /init (system.go); from there it mounts
//     the kernel filesystems, loads kernel modules,
//     brings the network up, then starts itself again as the supervisor
//     process and from then on only reaps orphaned processes, restarts the
//     supervisor process if it dies, and powers the machine off on the ACPI
//     power button or Ctrl-Alt-Del.
//   - As the supervisor process ("init supervise") it runs the supervisor
//     tree: the /dev/mapper links and the dm-verity log (core/devmapper),
//     containerd (only if the kernel has erofs), and preseed under it.
//
// Splitting the roles keeps PID 1 free of work that can fail and lets it reap
// every orphan without stealing exit statuses from the supervisor's own
// children. Nothing here may exit PID 1: a failure of early boot (before
// the supervisor starts) is one error line and a clean power-off, never a
// boot on a half-made system; a failure after it is logged and the machine
// keeps running. The console log is for people, the JSON log
// (appliance_log_json) for machines.
package main

import (
	"fmt"
	"os"

	"go.uber.org/zap"
)

// superviseArg is the argument that starts init in its supervisor role.
const superviseArg = "supervise"

func main() {
	if len(os.Args) > 1 && os.Args[1] == superviseArg {
		os.Exit(supervise(newLogger("supervisor")))
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "init: must run as PID 1 (or as 'init supervise')")
		os.Exit(2)
	}
	logger := newLogger("init")
	defer func() {
		// A bug in PID 1 must not panic the kernel with the cause scrolled
		// away: log it where the console shows it, then power off.
		if r := recover(); r != nil {
			logger.Error("init panicked; powering off", zap.Any("panic", r), zap.Stack("stack"))
			powerOff(logger, nil, "init panicked")
		}
	}()
	pid1(logger)
}
