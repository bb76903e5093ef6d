package main

import (
	"errors"
	"os"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/node"
)

const (
	// termGrace is how long the processes left after the supervisor tree
	// (shims, containers) get to exit on SIGTERM before SIGKILL.
	termGrace = 5 * time.Second
	// killWait bounds the wait for SIGKILLed processes to be gone: one in
	// uninterruptible sleep may never go.
	killWait = 10 * time.Second
	// reapPoll is how often exited processes are reaped while waiting.
	reapPoll = 20 * time.Millisecond
)

// powerOff stops the supervisor tree, then every other process, leaves the
// state disk clean, and powers off.
func powerOff(logger *zap.Logger, child *os.Process, why string) {
	shutDown(logger, child, why, unix.LINUX_REBOOT_CMD_POWER_OFF)
}

// shutDown is powerOff ending in cmd: a power-off, or a restart
// (LINUX_REBOOT_CMD_RESTART), which the updater asks for.
func shutDown(logger *zap.Logger, child *os.Process, why string, cmd int) {
	what := "power off"
	if cmd == unix.LINUX_REBOOT_CMD_RESTART {
		what = "reboot"
	}
	logger.Info("shutting down", zap.String("then", what), zap.String("reason", why))
	if child != nil {
		stopSupervisor(logger, child)
	}
	killAll(logger, unix.SIGTERM, termGrace)
	killAll(logger, unix.SIGKILL, killWait)
	// The containers' root filesystems (under containerd's state directory)
	// are overlays of the state disk's snapshots: they go first.
	releaseMounts(logger, node.ContainerdState)
	releaseMounts(logger, stateDir)
	unix.Sync()
	logger.Info(what)
	_ = logger.Sync()
	if err := unix.Reboot(cmd); err != nil {
		logger.Error(what+" failed", zap.Error(err))
	}
	select {} // PID 1 must never exit.
}

// stopSupervisor sends SIGTERM to the supervisor process and waits up to
// stopGrace for it to stop its tree and exit.
func stopSupervisor(logger *zap.Logger, child *os.Process) {
	start := time.Now()
	logger.Info("stopping the supervisor process", zap.Int("pid", child.Pid), zap.Duration("grace", stopGrace))
	if err := child.Signal(unix.SIGTERM); err != nil {
		logger.Warn("failed to signal the supervisor process", zap.Int("pid", child.Pid), zap.Error(err))
		return
	}
	for deadline := start.Add(stopGrace); time.Now().Before(deadline); time.Sleep(reapPoll) {
		var status unix.WaitStatus
		if pid, _ := unix.Wait4(child.Pid, &status, unix.WNOHANG, nil); pid == child.Pid {
			logger.Info("supervisor process stopped", zap.Int("pid", pid),
				zap.Int("exit_status", status.ExitStatus()), zap.Duration("took", time.Since(start)))
			return
		}
	}
	logger.Warn("supervisor process did not stop in time", zap.Int("pid", child.Pid), zap.Duration("grace", stopGrace))
}

// killAll sends sig to every process but PID 1 and reaps them until none is
// left or wait has passed. Every process that outlives its parent becomes
// PID 1's child, so "no child left" is "no process left".
func killAll(logger *zap.Logger, sig unix.Signal, wait time.Duration) {
	start := time.Now()
	if err := unix.Kill(-1, sig); errors.Is(err, unix.ESRCH) {
		// Nothing to signal; zombies may still wait to be reaped.
		logger.Info("no process left to signal", zap.String("signal", unix.SignalName(sig)))
	} else if err != nil {
		logger.Warn("failed to signal all processes", zap.String("signal", unix.SignalName(sig)), zap.Error(err))
	}
	reaped := 0
	for deadline := start.Add(wait); ; time.Sleep(reapPoll) {
		n, gone := reapAll()
		reaped += n
		if gone {
			logger.Info("all processes gone", zap.String("signal", unix.SignalName(sig)),
				zap.Int("reaped", reaped), zap.Duration("took", time.Since(start)))
			return
		}
		if time.Now().After(deadline) {
			logger.Warn("processes left after waiting", zap.String("signal", unix.SignalName(sig)),
				zap.Int("reaped", reaped), zap.Duration("waited", wait))
			return
		}
	}
}

// reapAll reaps the children that have exited and tells whether none is
// left.
func reapAll() (reaped int, none bool) {
	for {
		var status unix.WaitStatus
		pid, err := unix.Wait4(-1, &status, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.ECHILD):
			return reaped, true
		case err != nil || pid <= 0:
			return reaped, false
		}
		reaped++
	}
}

// releaseMounts unmounts every mount at or below dir, deepest first. If dir
// itself stays busy it is remounted read-only, so that its filesystem is
// clean all the same.
func releaseMounts(logger *zap.Logger, dir string) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if errors.Is(err, os.ErrNotExist) {
		// A boot that failed before /proc was mounted mounted nothing else.
		return
	}
	if err != nil {
		logger.Error("failed to read the mount table", zap.String("dir", dir), zap.Error(err))
		return
	}
	points, err := mountsBelow(info, dir)
	if err != nil {
		logger.Error("failed to parse the mount table", zap.String("dir", dir), zap.Error(err))
		return
	}
	for _, p := range points {
		err := unix.Unmount(p, 0)
		if err == nil {
			logger.Info("unmounted", zap.String("target", p))
			continue
		}
		logger.Warn("failed to unmount", zap.String("target", p), zap.Error(err))
		if p == dir {
			remountReadOnly(logger, p)
		}
	}
}

func remountReadOnly(logger *zap.Logger, p string) {
	if err := unix.Mount("", p, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		logger.Error("failed to remount read-only; the filesystem will need recovery", zap.String("target", p), zap.Error(err))
		return
	}
	logger.Info("remounted read-only", zap.String("target", p))
}
