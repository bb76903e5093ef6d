package supervisor

import (
	"errors"
	"os/exec"
	"syscall"
)

// Isolate makes cmd start in a process group of its own, which the kernel
// kills (SIGKILL) when the process that started it dies, however that
// happens, and makes cmd's Cancel send sig to the whole group. It is the
// one place the appliance's supervisor and its test harnesses set these,
// so that a dead or restarted parent never leaves a daemon behind to race
// its successor for a socket, a port or a root directory. Call it before
// cmd.Start; KillGroup removes what is left of the group after cmd.Wait.
//
// Pdeathsig follows the thread that started cmd: Go ends such a thread
// only when a goroutine locked to it exits, which nothing here does.
func Isolate(cmd *exec.Cmd, sig syscall.Signal) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pgid = 0
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.Cancel = func() error { return signalGroup(cmd, sig) }
}

// KillGroup sends SIGKILL to what is left of the process group of cmd
// (Isolate), once cmd itself has been waited for: a grandchild that
// outlived it. The kernel does not reuse a group's ID while a member
// lives, so the signal reaches nothing else.
func KillGroup(cmd *exec.Cmd) error {
	return signalGroup(cmd, syscall.SIGKILL)
}

func signalGroup(cmd *exec.Cmd, sig syscall.Signal) error {
	if cmd.Process == nil {
		return nil
	}
	if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}
