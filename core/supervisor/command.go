package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"go.uber.org/zap"
)

const (
	// stopGrace is how long a child process gets between SIGTERM and
	// SIGKILL, unless its cmd.WaitDelay says otherwise.
	stopGrace = 10 * time.Second
	// maxLine is the longest output line logged as one entry; a longer one
	// is logged in pieces of this size.
	maxLine = 1 << 20
)

// RunCommand runs cmd as a child process of the runnable that owns ctx. cmd
// must be made with exec.CommandContext with ctx or a context derived from
// it, and have no Stdout or Stderr. RunCommand starts it in a process group
// of its own that dies with this process (Isolate), sets cmd.Cancel to send
// SIGTERM to that group and, unless it is set, cmd.WaitDelay to a grace
// period after which exec sends SIGKILL and closes the output pipes (which
// a grandchild may still hold); once cmd has exited, what is left of its
// group is killed. The output goes line by line to the runnable's logger (field
// "stream"). It returns when the process has exited and its output is
// drained: nil for exit status 0, else an error, wrapping ctx's error if
// ctx ended (a runnable that must not end treats nil as a failure anyway,
// since it has not signalled Done).
func RunCommand(ctx context.Context, cmd *exec.Cmd) error {
	return RunCommandLines(ctx, cmd, LogLine)
}

// LineFunc logs one line of a child's output (without its newline) to
// logger; stream is "stdout" or "stderr". line is valid only during the call.
type LineFunc func(logger *zap.Logger, stream string, line []byte)

// LogLine is RunCommand's LineFunc: message "output", fields stream and line.
func LogLine(logger *zap.Logger, stream string, line []byte) {
	logger.Info("output", zap.String("stream", stream), zap.String("line", string(line)))
}

// RunCommandLines is RunCommand with each output line given to logLine, for
// a child whose lines carry structure of their own (JSON logs, say).
func RunCommandLines(ctx context.Context, cmd *exec.Cmd, logLine LineFunc) error {
	logger := Logger(ctx).With(zap.String("command", cmd.Path))
	if cmd.Cancel == nil {
		// exec.CommandContext sets Cancel; without it ctx cannot stop the
		// process.
		return fmt.Errorf("supervisor: %s was not made with exec.CommandContext", cmd.Path)
	}
	if cmd.Stdout != nil || cmd.Stderr != nil {
		return fmt.Errorf("supervisor: %s already has Stdout or Stderr set; RunCommand logs them", cmd.Path)
	}
	Isolate(cmd, syscall.SIGTERM)
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = stopGrace
	}
	// exec copies each stream to its writer in a goroutine of its own, and
	// Wait returns only once both are done: no lock needed.
	stdout := &lineLogger{logger: logger, stream: "stdout", logLine: logLine}
	stderr := &lineLogger{logger: logger, stream: "stderr", logLine: logLine}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to start %s: %w", cmd.Path, err)
	}
	logger.Info("started", zap.Int("pid", cmd.Process.Pid))
	err := cmd.Wait()
	// A grandchild in its group (containerd's mkfs.erofs, say) must not
	// outlive the run: the next run would meet it.
	if kerr := KillGroup(cmd); kerr != nil {
		logger.Warn("failed to kill what is left of its process group", zap.Error(kerr))
	}
	stdout.flush()
	stderr.flush()
	if ctx.Err() != nil {
		if killed(cmd.ProcessState) {
			logger.Warn("did not stop after SIGTERM; killed", zap.Duration("grace", cmd.WaitDelay))
		}
		return fmt.Errorf("%s stopped: %w", cmd.Path, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("%s exited: %w", cmd.Path, err)
	}
	logger.Info("exited", zap.Int("status", 0))
	return nil
}

// killed tells whether the process died of SIGKILL.
func killed(st *os.ProcessState) bool {
	if st == nil {
		return false
	}
	ws, ok := st.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// lineLogger logs what is written to it, one entry per line.
type lineLogger struct {
	logger  *zap.Logger
	stream  string
	logLine LineFunc
	buf     []byte // the start of a line not yet ended
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	rest := l.buf
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		l.log(rest[:i])
		rest = rest[i+1:]
	}
	for len(rest) >= maxLine {
		l.log(rest[:maxLine])
		rest = rest[maxLine:]
	}
	l.buf = append(l.buf[:0], rest...)
	return len(p), nil
}

// flush logs a last line that did not end in a newline.
func (l *lineLogger) flush() {
	if len(l.buf) > 0 {
		l.log(l.buf)
		l.buf = l.buf[:0]
	}
}

func (l *lineLogger) log(line []byte) {
	l.logLine(l.logger, l.stream, bytes.TrimSuffix(line, []byte("\r")))
}
