package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// stopGrace is how long a child process gets between SIGTERM and SIGKILL.
const stopGrace = 10 * time.Second

// RunCommand runs cmd as a child process of the runnable that owns ctx: its
// output goes line by line to the runnable's logger (field "stream"), and
// when ctx is cancelled it gets SIGTERM, then SIGKILL after a grace period.
// It returns when the process has exited and its output is drained: nil for
// exit status 0, else an error (a runnable that must not end treats nil as a
// failure anyway, since it has not signalled Done).
func RunCommand(ctx context.Context, cmd *exec.Cmd) error {
	logger := Logger(ctx).With(zap.String("command", cmd.Path))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("failed to pipe stdout of %s: %w", cmd.Path, err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("failed to pipe stderr of %s: %w", cmd.Path, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to start %s: %w", cmd.Path, err)
	}
	logger.Info("started", zap.Int("pid", cmd.Process.Pid))

	var drained sync.WaitGroup
	drained.Add(2)
	go logLines(&drained, logger, "stdout", stdout)
	go logLines(&drained, logger, "stderr", stderr)

	exited := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-exited:
			return
		case <-ctx.Done():
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(stopGrace)
		defer t.Stop()
		select {
		case <-exited:
		case <-t.C:
			logger.Warn("did not stop after SIGTERM; killing", zap.Duration("grace", stopGrace))
			_ = cmd.Process.Kill()
		}
	}()

	// Wait closes the pipes, so drain them first.
	drained.Wait()
	err = cmd.Wait()
	close(exited)
	<-stopped
	if ctx.Err() != nil {
		return fmt.Errorf("%s stopped: %w", cmd.Path, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("%s exited: %w", cmd.Path, err)
	}
	logger.Info("exited", zap.Int("status", 0))
	return nil
}

func logLines(wg *sync.WaitGroup, logger *zap.Logger, stream string, r io.Reader) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		logger.Info("output", zap.String("stream", stream), zap.String("line", sc.Text()))
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.ErrClosedPipe) {
		logger.Warn("reading output failed", zap.String("stream", stream), zap.Error(err))
	}
}
