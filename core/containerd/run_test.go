package containerd_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/appliance-bundler/appliance/core/containerd"
	"github.com/appliance-bundler/appliance/core/supervisor"
	"github.com/appliance-bundler/appliance/tests/containerdtest"
)

// guard bounds each wait; reaching it is a failure, never an expectation.
const guard = 2 * time.Minute

// superviseContainerd runs cfg.Run as the root of a supervisor tree that
// logs to core, with wrap around each call, and stops the tree when the
// test ends.
func superviseContainerd(t *testing.T, cfg containerd.Config, core zapcore.Core, wrap func(ctx context.Context, run supervisor.Runnable) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := supervisor.New(ctx, zap.New(core), func(ctx context.Context) error { return wrap(ctx, cfg.Run) },
		supervisor.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	t.Cleanup(func() {
		cancel()
		done := make(chan struct{})
		go func() { s.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(guard):
			t.Errorf("the supervisor tree did not stop")
		}
	})
}

// containerdPids are the pids RunCommand logged containerd's starts with.
func containerdPids(logs *observer.ObservedLogs) []int {
	var pids []int
	for _, e := range logs.FilterMessage("started").All() {
		if pid, ok := e.ContextMap()["pid"].(int64); ok {
			pids = append(pids, int(pid))
		}
	}
	return pids
}

// Run never returns while its containerd lives, even when it fails after
// containerd answered (here: a child it cannot start); the next run would
// start a second containerd on the same root.
func TestRunReturnsOnlyOnceContainerdExited(t *testing.T) {
	cfg := containerdtest.NewConfig(t)
	cfg.Children = map[string]supervisor.Runnable{
		"Not A Name": func(ctx context.Context) error { return nil },
	}
	returned := make(chan error, 1)
	core, logs := observer.New(zapcore.InfoLevel)
	superviseContainerd(t, cfg, core, func(ctx context.Context, run supervisor.Runnable) error {
		err := run(ctx)
		pids := containerdPids(logs)
		if len(pids) == 0 {
			returned <- errors.New("containerd was never started")
			return err
		}
		// RunCommand reaps it: an exited containerd is no process at all.
		if alive := syscall.Kill(pids[len(pids)-1], 0); alive == nil {
			returned <- fmt.Errorf("containerd (pid %d) still runs after Run returned %v", pids[len(pids)-1], err)
		} else {
			returned <- nil
		}
		return err
	})
	select {
	case err := <-returned:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(guard):
		t.Fatal("Run never returned")
	}
}

// A child of containerd that fails restarts alone: its sibling (the
// kubelet beside preseed) keeps running.
func TestFailedChildDoesNotRestartItsSibling(t *testing.T) {
	cfg := containerdtest.NewConfig(t)
	var flakyRuns, steadyRuns atomic.Int32
	again := make(chan struct{})
	cfg.Children = map[string]supervisor.Runnable{
		"flaky": func(ctx context.Context) error {
			if flakyRuns.Add(1) == 1 {
				return errors.New("first run fails")
			}
			close(again)
			supervisor.Signal(ctx, supervisor.SignalHealthy)
			<-ctx.Done()
			return ctx.Err()
		},
		"steady": func(ctx context.Context) error {
			steadyRuns.Add(1)
			supervisor.Signal(ctx, supervisor.SignalHealthy)
			<-ctx.Done()
			return ctx.Err()
		},
	}
	core, _ := observer.New(zapcore.InfoLevel)
	superviseContainerd(t, cfg, core, func(ctx context.Context, run supervisor.Runnable) error { return run(ctx) })
	select {
	case <-again:
	case <-time.After(guard):
		t.Fatal("the failed child was never run again")
	}
	if n := steadyRuns.Load(); n != 1 {
		t.Errorf("the sibling of a failed child ran %d times, want 1", n)
	}
}
