package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// guard bounds every wait in these tests; reaching it is a failure, so the
// tests never depend on how fast the machine is.
const guard = 20 * time.Second

func start(t *testing.T, root Runnable, opts ...Option) (*Supervisor, *observer.ObservedLogs, context.CancelFunc) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	ctx, cancel := context.WithCancel(context.Background())
	opts = append([]Option{WithBackoff(time.Millisecond, 4*time.Millisecond)}, opts...)
	s := New(ctx, zap.New(core), root, opts...)
	t.Cleanup(func() {
		cancel()
		waitOrFail(t, "supervisor to stop", s.Wait)
	})
	return s, logs, cancel
}

func waitOrFail(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		fn()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(guard):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func recv[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(guard):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

func TestChildLoggerNamedByPath(t *testing.T) {
	logged := make(chan struct{})
	_, logs, _ := start(t, func(ctx context.Context) error {
		if err := Run(ctx, "containerd", func(ctx context.Context) error {
			if err := Run(ctx, "preseed", func(ctx context.Context) error {
				Logger(ctx).Info("hello", zap.Int("n", 1))
				close(logged)
				Signal(ctx, SignalHealthy)
				Signal(ctx, SignalDone)
				return nil
			}); err != nil {
				return err
			}
			// Returning now would be a failure, and a restart would log
			// again.
			Signal(ctx, SignalHealthy)
			<-ctx.Done()
			return ctx.Err()
		}); err != nil {
			return err
		}
		Signal(ctx, SignalHealthy)
		<-ctx.Done()
		return ctx.Err()
	})
	recv(t, "log line", logged)
	entries := logs.FilterMessage("hello").All()
	if len(entries) != 1 || entries[0].LoggerName != "root.containerd.preseed" {
		t.Fatalf("log entries = %+v, want one from root.containerd.preseed", entries)
	}
}

func TestFailedRunnableRestartsUntilHealthy(t *testing.T) {
	var runs atomic.Int32
	healthy := make(chan int32, 1)
	start(t, func(ctx context.Context) error {
		n := runs.Add(1)
		if n < 3 {
			return errors.New("not yet")
		}
		Signal(ctx, SignalHealthy)
		healthy <- n
		<-ctx.Done()
		return ctx.Err()
	})
	if n := recv(t, "healthy run", healthy); n != 3 {
		t.Fatalf("became healthy on run %d, want 3", n)
	}
}

func TestReturnWithoutDoneIsFailure(t *testing.T) {
	var runs atomic.Int32
	second := make(chan struct{})
	start(t, func(ctx context.Context) error {
		if runs.Add(1) == 2 {
			close(second)
			Signal(ctx, SignalHealthy)
			<-ctx.Done()
			return ctx.Err()
		}
		Signal(ctx, SignalHealthy)
		return nil // no Done: must be restarted
	})
	recv(t, "restart after nil without Done", second)
}

func TestPanicIsFailureAndRestarted(t *testing.T) {
	var runs atomic.Int32
	second := make(chan struct{})
	_, logs, _ := start(t, func(ctx context.Context) error {
		if runs.Add(1) == 1 {
			panic("boom")
		}
		close(second)
		Signal(ctx, SignalHealthy)
		<-ctx.Done()
		return ctx.Err()
	})
	recv(t, "restart after panic", second)
	failures := logs.FilterMessage("runnable failed; restarting its group").All()
	if len(failures) != 1 || !strings.Contains(failures[0].ContextMap()["error"].(string), "panic: boom") {
		t.Fatalf("failure logs = %+v, want one naming the panic", failures)
	}
}

func TestDoneBeforeHealthyIsFailure(t *testing.T) {
	var runs atomic.Int32
	second := make(chan struct{})
	_, logs, _ := start(t, func(ctx context.Context) error {
		if runs.Add(1) == 1 {
			Signal(ctx, SignalDone)
			return nil
		}
		close(second)
		Signal(ctx, SignalHealthy)
		<-ctx.Done()
		return ctx.Err()
	})
	recv(t, "restart after misuse", second)
	failures := logs.FilterMessage("runnable failed; restarting its group").All()
	if len(failures) != 1 || !strings.Contains(failures[0].ContextMap()["error"].(string), "signal done in state new") {
		t.Fatalf("failure logs = %+v, want one naming the misuse", failures)
	}
}

// A failing parent cancels its children and waits for them before it runs
// again, so two generations of a child never run at once.
func TestChildrenCancelledBeforeParentRestarts(t *testing.T) {
	var parentRuns, childAlive atomic.Int32
	overlap := make(chan int32, 10)
	secondParent := make(chan struct{})
	childStarted := make(chan struct{}, 10)
	start(t, func(ctx context.Context) error {
		n := parentRuns.Add(1)
		if n == 2 {
			overlap <- childAlive.Load()
			close(secondParent)
		}
		if err := Run(ctx, "child", func(ctx context.Context) error {
			childAlive.Add(1)
			defer childAlive.Add(-1)
			Signal(ctx, SignalHealthy)
			childStarted <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}); err != nil {
			return err
		}
		Signal(ctx, SignalHealthy)
		if n == 1 {
			recv(t, "first child", childStarted)
			return errors.New("parent fails")
		}
		<-ctx.Done()
		return ctx.Err()
	})
	recv(t, "second parent run", secondParent)
	if alive := recv(t, "overlap", overlap); alive != 0 {
		t.Fatalf("%d children of the failed run still alive when the parent restarted", alive)
	}
}

// One member of a group failing restarts its siblings too.
func TestGroupRestartsTogether(t *testing.T) {
	var aRuns, bRuns atomic.Int32
	bSecond := make(chan struct{})
	aStarted := make(chan struct{}, 10)
	start(t, func(ctx context.Context) error {
		err := RunGroup(ctx, map[string]Runnable{
			"a": func(ctx context.Context) error {
				aRuns.Add(1)
				Signal(ctx, SignalHealthy)
				aStarted <- struct{}{}
				<-ctx.Done()
				return ctx.Err()
			},
			"b": func(ctx context.Context) error {
				if bRuns.Add(1) == 1 {
					recv(t, "a started", aStarted)
					return errors.New("b fails")
				}
				close(bSecond)
				Signal(ctx, SignalHealthy)
				<-ctx.Done()
				return ctx.Err()
			},
		})
		if err != nil {
			return err
		}
		Signal(ctx, SignalHealthy)
		Signal(ctx, SignalDone)
		return nil
	})
	recv(t, "b restarted", bSecond)
	recv(t, "a restarted", aStarted)
	if got := aRuns.Load(); got != 2 {
		t.Fatalf("a ran %d times, want 2 (restarted with its failed sibling)", got)
	}
}

func TestChildrenOfDoneRunnableKeepRunning(t *testing.T) {
	childCtx := make(chan context.Context, 1)
	s, _, _ := start(t, func(ctx context.Context) error {
		if err := Run(ctx, "server", func(ctx context.Context) error {
			Signal(ctx, SignalHealthy)
			childCtx <- ctx
			<-ctx.Done()
			return ctx.Err()
		}); err != nil {
			return err
		}
		Signal(ctx, SignalHealthy)
		Signal(ctx, SignalDone)
		return nil
	})
	ctx := recv(t, "child running", childCtx)
	// The root has returned; wait until the supervisor has seen that.
	deadline := time.Now().Add(guard)
	for s.States()["root"] != StateDone {
		if time.Now().After(deadline) {
			t.Fatalf("root state = %v, want done", s.States()["root"])
		}
		time.Sleep(time.Millisecond)
	}
	if ctx.Err() != nil {
		t.Fatalf("child of a Done runnable was cancelled: %v", ctx.Err())
	}
	if st := s.States()["root.server"]; st != StateHealthy {
		t.Fatalf("root.server state = %v, want healthy", st)
	}
}

func TestShutdownCancelsWholeTreeAndWaits(t *testing.T) {
	var alive atomic.Int32
	ready := make(chan struct{}, 3)
	leaf := func(ctx context.Context) error {
		alive.Add(1)
		defer alive.Add(-1)
		Signal(ctx, SignalHealthy)
		ready <- struct{}{}
		<-ctx.Done()
		time.Sleep(10 * time.Millisecond) // slow cleanup must still be waited for
		return ctx.Err()
	}
	s, _, cancel := start(t, func(ctx context.Context) error {
		if err := RunGroup(ctx, map[string]Runnable{"x": leaf, "y": leaf}); err != nil {
			return err
		}
		if err := Run(ctx, "z", func(ctx context.Context) error {
			if err := Run(ctx, "deep", leaf); err != nil {
				return err
			}
			Signal(ctx, SignalHealthy)
			Signal(ctx, SignalDone)
			return nil
		}); err != nil {
			return err
		}
		Signal(ctx, SignalHealthy)
		<-ctx.Done()
		return ctx.Err()
	})
	for range 3 {
		recv(t, "leaf ready", ready)
	}
	cancel()
	waitOrFail(t, "Wait", s.Wait)
	if n := alive.Load(); n != 0 {
		t.Fatalf("%d runnables still running after Wait returned", n)
	}
	if st := s.States(); len(st) != 0 {
		t.Fatalf("runnables left after shutdown: %v", st)
	}
}

// A group started from a goroutine while its parent's run ends is either
// refused or waited for: the hooks end the tree while RunGroup is between
// accepting the group and starting it, and the parent's exit path must
// count the group among the children it waits for.
func TestGroupStartedWhileParentExitsIsWaitedFor(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subtrees := make(chan int, 1)
	waited := make(chan int, 1)
	h := hooks{
		groupStarting: func(parent string) {
			if parent != "root.p" {
				return
			}
			cancel()
			// Let root.p's exit path read its children before the group
			// starts (called off the test goroutine: no t.Fatal).
			select {
			case n := <-subtrees:
				waited <- n
			case <-time.After(guard):
				t.Errorf("root.p's exit path never read its children")
				waited <- -1
			}
		},
		subtreesWaiting: func(group string, children int) {
			if group == "root.p" {
				subtrees <- children
			}
		},
	}
	var childDone atomic.Bool
	runErr := make(chan error, 1)
	root := func(ctx context.Context) error {
		if err := Run(ctx, "p", func(ctx context.Context) error {
			Signal(ctx, SignalHealthy)
			// A Done runnable's children keep running, so its context
			// can still start one, from a goroutine of its own.
			go func() {
				runErr <- Run(ctx, "late", func(ctx context.Context) error {
					<-ctx.Done()
					childDone.Store(true)
					return ctx.Err()
				})
			}()
			Signal(ctx, SignalDone)
			return nil
		}); err != nil {
			return err
		}
		Signal(ctx, SignalHealthy)
		<-ctx.Done()
		return ctx.Err()
	}
	core, _ := observer.New(zapcore.DebugLevel)
	s := New(ctx, zap.New(core), root, WithBackoff(time.Millisecond, time.Millisecond), withHooks(h))
	waitOrFail(t, "Wait", s.Wait)
	if !childDone.Load() {
		t.Errorf("Wait returned before root.p.late had returned")
	}
	if n := recv(t, "root.p's children", waited); n != 1 {
		t.Errorf("root.p's exit path waited for %d child groups, want 1 (the one being started)", n)
	}
	if err := recv(t, "Run", runErr); err != nil {
		t.Errorf("Run(late) = %v, want nil", err)
	}
	if st := s.States(); len(st) != 0 {
		t.Errorf("runnables left after shutdown: %v", st)
	}
}

// A context kept from a run that failed cannot start children in the run
// that replaced it.
func TestRunWithContextOfEndedRunIsRefused(t *testing.T) {
	var runs atomic.Int32
	oldCtx := make(chan context.Context, 1)
	second := make(chan struct{})
	start(t, func(ctx context.Context) error {
		Signal(ctx, SignalHealthy)
		if runs.Add(1) == 1 {
			oldCtx <- ctx
			return errors.New("fail")
		}
		close(second)
		<-ctx.Done()
		return ctx.Err()
	})
	ctx := recv(t, "first run", oldCtx)
	recv(t, "second run", second)
	err := Run(ctx, "stale", func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with the failed run's context = %v, want context.Canceled", err)
	}
}

// A goroutine left from run N that signals with run N's context must not
// change the state of run N+1: the second run stays new, so its parent
// sees no Healthy it never gave.
func TestSignalWithContextOfEndedRunIsDropped(t *testing.T) {
	var runs atomic.Int32
	oldCtx := make(chan context.Context, 1)
	second := make(chan struct{})
	s, _, _ := start(t, func(ctx context.Context) error {
		if runs.Add(1) == 1 {
			oldCtx <- ctx
			return errors.New("fail")
		}
		close(second)
		<-ctx.Done()
		return ctx.Err()
	})
	ctx := recv(t, "first run", oldCtx)
	recv(t, "second run", second)
	Signal(ctx, SignalHealthy)
	Signal(ctx, SignalDone)
	if st := s.States()[rootName]; st != StateNew {
		t.Fatalf("after signals with the ended run's context, the new run is %s, want %s", st, StateNew)
	}
}

// RunGroup with no runnables is refused, and the parent's exit is not
// held up by a group that would never exit.
func TestRunGroupWithNoRunnablesIsRefused(t *testing.T) {
	got := make(chan error, 1)
	s, _, cancel := start(t, func(ctx context.Context) error {
		got <- RunGroup(ctx, nil)
		Signal(ctx, SignalHealthy)
		<-ctx.Done()
		return ctx.Err()
	})
	if err := recv(t, "RunGroup's result", got); err == nil || !strings.Contains(err.Error(), "no runnables") {
		t.Fatalf("RunGroup(ctx, nil) = %v, want an error saying it has no runnables", err)
	}
	cancel()
	waitOrFail(t, "the tree to stop", s.Wait)
}

func TestRunRejectsBadNames(t *testing.T) {
	errs := make(chan []error, 1)
	start(t, func(ctx context.Context) error {
		noop := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
		var got []error
		got = append(got, Run(ctx, "ok", noop))
		got = append(got, Run(ctx, "ok", noop))
		got = append(got, Run(ctx, "has.dot", noop))
		got = append(got, Run(ctx, "", noop))
		errs <- got
		Signal(ctx, SignalHealthy)
		<-ctx.Done()
		return ctx.Err()
	})
	got := recv(t, "Run results", errs)
	if got[0] != nil {
		t.Fatalf("Run(ok) = %v, want nil", got[0])
	}
	for i, want := range []string{"already has a child", "invalid runnable name", "invalid runnable name"} {
		if got[i+1] == nil || !strings.Contains(got[i+1].Error(), want) {
			t.Errorf("case %d: err = %v, want %q", i+1, got[i+1], want)
		}
	}
	if err := Run(context.Background(), "x", nil); err == nil {
		t.Errorf("Run outside a runnable succeeded")
	}
}

// The delay before a restart doubles with each failure and is back to the
// first one after a run that became healthy before it failed.
func TestBackoffGrowsAndResetsOnHealthy(t *testing.T) {
	const initial = 10 * time.Millisecond
	var runs atomic.Int32
	times := make(chan time.Time, 20)
	done := make(chan struct{})
	_, logs, _ := start(t, func(ctx context.Context) error {
		times <- time.Now()
		switch runs.Add(1) {
		case 6:
			// Healthy, then failing: the next delay starts over.
			Signal(ctx, SignalHealthy)
			return errors.New("fail after healthy")
		case 7:
			close(done)
			Signal(ctx, SignalHealthy)
			<-ctx.Done()
			return ctx.Err()
		}
		return errors.New("fail")
	}, WithBackoff(initial, time.Minute))
	recv(t, "seventh run", done)
	var ts []time.Time
	for range 7 {
		ts = append(ts, <-times)
	}
	want := []time.Duration{initial, 2 * initial, 4 * initial, 8 * initial, 16 * initial, initial}
	var got []time.Duration
	for _, e := range logs.FilterMessage("runnable failed; restarting its group").All() {
		got = append(got, e.ContextMap()["backoff"].(time.Duration))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("logged backoffs = %v, want %v", got, want)
	}
	// Each gap is at least the delay logged for it: the logged delay is the
	// one waited. (No upper bound: a loaded machine may wake late.)
	for i, d := range want {
		if gap := ts[i+1].Sub(ts[i]); gap < d {
			t.Errorf("gap %d = %v, want >= %v", i, gap, d)
		}
	}
}

// waitLogged waits until an entry with field f has been logged.
func waitLogged(t *testing.T, logs *observer.ObservedLogs, f zap.Field) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for logs.FilterField(f).Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no log entry with %s=%v", f.Key, f.String)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRunCommandLogsOutputAndStopsOnCancel(t *testing.T) {
	result := make(chan error, 1)
	ctxs := make(chan context.CancelFunc, 1)
	_, logs, _ := start(t, func(ctx context.Context) error {
		cctx, cancel := context.WithCancel(ctx)
		ctxs <- cancel
		// The shell prints, then waits; SIGTERM ends it through the trap.
		cmd := exec.CommandContext(cctx, "/bin/sh", "-c", `trap 'printf bye; exit 0' TERM; echo hello; printf partial; echo oops >&2; while :; do sleep 0.01; done`)
		result <- RunCommand(cctx, cmd)
		Signal(ctx, SignalHealthy)
		<-ctx.Done()
		return ctx.Err()
	})
	cancel := recv(t, "command started", ctxs)
	// Everything is out before the SIGTERM, which would end the script.
	waitLogged(t, logs, zap.String("line", "hello"))
	waitLogged(t, logs, zap.String("line", "oops"))
	cancel()
	err := recv(t, "RunCommand to return", result)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("RunCommand = %v, want context.Canceled", err)
	}
	for _, line := range []string{"hello", "oops", "partialbye"} {
		if n := logs.FilterField(zap.String("line", line)).Len(); n != 1 {
			t.Errorf("%d log entries with line %q, want 1", n, line)
		}
	}
	// The whole group gets SIGTERM: the shell may add a line of its own
	// about its killed sleep.
	if logs.FilterField(zap.String("stream", "stderr")).FilterField(zap.String("line", "oops")).Len() != 1 {
		t.Errorf("stderr line not tagged stream=stderr")
	}
}

// A child that ignores SIGTERM is killed once the grace (cmd.WaitDelay) is
// over, and RunCommand returns.
func TestRunCommandKillsChildIgnoringSIGTERM(t *testing.T) {
	// Long enough for the shell to run its trap even on a loaded machine.
	const grace = 2 * time.Second
	result := make(chan error, 1)
	ctxs := make(chan context.CancelFunc, 1)
	cmds := make(chan *exec.Cmd, 1)
	_, logs, _ := start(t, func(ctx context.Context) error {
		cctx, cancel := context.WithCancel(ctx)
		ctxs <- cancel
		// The trap only reports the SIGTERM; the loop goes on.
		cmd := exec.CommandContext(cctx, "/bin/sh", "-c", `trap 'echo term' TERM; echo ready; while :; do sleep 0.01; done`)
		cmd.WaitDelay = grace
		cmds <- cmd
		result <- RunCommand(cctx, cmd)
		Signal(ctx, SignalHealthy)
		<-ctx.Done()
		return ctx.Err()
	})
	cancel := recv(t, "command started", ctxs)
	cmd := recv(t, "command", cmds)
	waitLogged(t, logs, zap.String("line", "ready"))
	t0 := time.Now()
	cancel()
	err := recv(t, "RunCommand to return", result)
	took := time.Since(t0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("RunCommand = %v, want context.Canceled", err)
	}
	if took < grace {
		t.Errorf("RunCommand returned %v after cancel, before the grace of %v", took, grace)
	}
	if logs.FilterField(zap.String("line", "term")).Len() != 1 {
		t.Errorf("the child did not report the SIGTERM before it was killed")
	}
	if !killed(cmd.ProcessState) {
		t.Errorf("child ended with %v, want killed by SIGKILL", cmd.ProcessState)
	}
	if logs.FilterMessage("did not stop after SIGTERM; killed").Len() != 1 {
		t.Errorf("the kill was not logged")
	}
}

func TestRunCommandRefusesCommandWithoutContext(t *testing.T) {
	result := make(chan error, 1)
	start(t, func(ctx context.Context) error {
		result <- RunCommand(ctx, exec.Command("/bin/true"))
		Signal(ctx, SignalHealthy)
		<-ctx.Done()
		return ctx.Err()
	})
	err := recv(t, "RunCommand", result)
	if err == nil || !strings.Contains(err.Error(), "exec.CommandContext") {
		t.Fatalf("RunCommand = %v, want an error asking for exec.CommandContext", err)
	}
}

func TestRunCommandReportsExitStatus(t *testing.T) {
	result := make(chan error, 1)
	start(t, func(ctx context.Context) error {
		result <- RunCommand(ctx, exec.CommandContext(ctx, "/bin/sh", "-c", "exit 3"))
		Signal(ctx, SignalHealthy)
		<-ctx.Done()
		return ctx.Err()
	})
	err := recv(t, "RunCommand", result)
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
		t.Fatalf("RunCommand = %v, want exit status 3", err)
	}
}

// RunCommandLines hands each line, on either stream, to its LineFunc instead
// of the default "output" entry.
func TestRunCommandLinesUsesLineFunc(t *testing.T) {
	result := make(chan error, 1)
	_, logs, _ := start(t, func(ctx context.Context) error {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `echo one; echo two >&2; printf three`)
		result <- RunCommandLines(ctx, cmd, func(logger *zap.Logger, stream string, line []byte) {
			logger.Info("parsed", zap.String("stream", stream), zap.String("upper", strings.ToUpper(string(line))))
		})
		Signal(ctx, SignalHealthy)
		<-ctx.Done()
		return ctx.Err()
	})
	if err := recv(t, "RunCommandLines", result); err != nil {
		t.Fatalf("RunCommandLines = %v, want nil", err)
	}
	for stream, lines := range map[string][]string{"stdout": {"ONE", "THREE"}, "stderr": {"TWO"}} {
		for _, l := range lines {
			got := logs.FilterMessage("parsed").FilterField(zap.String("upper", l)).FilterField(zap.String("stream", stream))
			if got.Len() != 1 {
				t.Errorf("%d entries with upper=%q on %s, want 1", got.Len(), l, stream)
			}
		}
	}
	if n := logs.FilterMessage("output").Len(); n != 0 {
		t.Errorf("%d default \"output\" entries, want 0: the LineFunc replaces them", n)
	}
}

// A grandchild in the child's process group that ignores SIGTERM does not
// outlive the run: the group is killed once the child has exited.
func TestRunCommandLeavesNothingOfItsGroup(t *testing.T) {
	pids := make(chan int, 1)
	ran := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `(trap '' TERM; exec sleep 1000) & echo $!; wait`)
		ran <- RunCommandLines(ctx, cmd, func(_ *zap.Logger, stream string, line []byte) {
			if pid, err := strconv.Atoi(string(line)); err == nil && stream == "stdout" {
				pids <- pid
			}
		})
	}()
	pid := recv(t, "the grandchild's pid", pids)
	cancel()
	if err := recv(t, "RunCommand to return", ran); !errors.Is(err, context.Canceled) {
		t.Fatalf("RunCommand = %v, want context.Canceled", err)
	}
	deadline := time.Now().Add(guard)
	for processLives(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d of the stopped command still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processLives tells whether pid is a process that has not exited (a
// zombie has).
func processLives(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command's closing parenthesis.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}
