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

// stoppingWindow is how long TestChildrenStopBeforeContainerd's child keeps
// calling containerd after the tree was told to stop.
const stoppingWindow = 5 * time.Second

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
	steadyUp := make(chan struct{})
	var steadyFirst context.Context
	cfg.Children = map[string]supervisor.Runnable{
		"flaky": func(ctx context.Context) error {
			if flakyRuns.Add(1) == 1 {
				// It fails only once its sibling runs, which a shared
				// group would then restart.
				select {
				case <-steadyUp:
				case <-ctx.Done():
					return ctx.Err()
				}
				return errors.New("first run fails")
			}
			close(again)
			supervisor.Signal(ctx, supervisor.SignalHealthy)
			<-ctx.Done()
			return ctx.Err()
		},
		"steady": func(ctx context.Context) error {
			if steadyRuns.Add(1) == 1 {
				steadyFirst = ctx
				close(steadyUp)
			}
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
	// A group is cancelled before any member restarts: by now the first
	// run of a sibling in the same group would have been told to stop.
	if err := steadyFirst.Err(); err != nil {
		t.Errorf("the sibling of a failed child was stopped with it: %v", err)
	}
	if n := steadyRuns.Load(); n != 1 {
		t.Errorf("the sibling of a failed child ran %d times, want 1", n)
	}
}

// When the tree stops, containerd outlives its children: the kubelet and
// preseed call it until they exit, and would log its going away as errors.
func TestChildrenStopBeforeContainerd(t *testing.T) {
	cfg := containerdtest.NewConfig(t)
	answered := make(chan error, 1)
	cfg.Children = map[string]supervisor.Runnable{
		"child": func(ctx context.Context) error {
			supervisor.Signal(ctx, supervisor.SignalHealthy)
			<-ctx.Done()
			// As the kubelet does while it stops, it calls containerd, for
			// a while: a containerd stopped at once (SIGTERM with the
			// tree) is gone in well under this window, which bounds a
			// check of absence, not a wait for success.
			for end := time.Now().Add(stoppingWindow); time.Now().Before(end); {
				cctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := containerd.WaitReady(cctx, cfg.Address, nil)
				cancel()
				if err != nil {
					answered <- err
					return ctx.Err()
				}
			}
			answered <- nil
			return ctx.Err()
		},
	}
	core, logs := observer.New(zapcore.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	s := supervisor.New(ctx, zap.New(core), cfg.Run, supervisor.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	for deadline := time.Now().Add(guard); logs.FilterMessage("containerd ready").Len() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("containerd never got ready")
		}
	}
	cancel()
	select {
	case err := <-answered:
		if err != nil {
			t.Errorf("containerd did not answer its stopping child: %v", err)
		}
	case <-time.After(guard):
		t.Fatal("the child never stopped")
	}
	done := make(chan struct{})
	go func() { s.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(guard):
		t.Fatal("the tree did not stop after its child")
	}
}
