package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/tests/runfile"
)

// Helper modes of this test binary, chosen by environment variable, for the
// processes that the zombie test places in pause's PID namespace.
const (
	modeEnv = "PAUSE_TEST_MODE"
	// modeOrphan starts a modeWait child and exits at once, orphaning it.
	modeOrphan = "orphan"
	// modeWait exits when its stdin is closed.
	modeWait = "wait"
)

func TestMain(m *testing.M) {
	switch os.Getenv(modeEnv) {
	case modeOrphan:
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), modeEnv+"="+modeWait)
		c.Stdin = os.Stdin
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	case modeWait:
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// procStat returns a process's state letter and parent pid.
func procStat(pid int) (state byte, ppid int, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may contain spaces.
	rest := string(data[strings.LastIndexByte(string(data), ')')+2:])
	f := strings.Fields(rest)
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, err
}

// waitReady waits for pause's "ready" line, written once its signal
// handlers are installed: a signal sent earlier would kill it by default
// (Go's runtime catches SIGINT and SIGTERM from the start, so SigCgt in
// /proc tells nothing). Later stderr lines are copied to the test's.
func waitReady(t *testing.T, stderr io.Reader) {
	t.Helper()
	r := bufio.NewReader(stderr)
	line, err := r.ReadString('\n')
	if err != nil || line != "pause: ready\n" {
		t.Fatalf("pause did not say it is ready: %q, %v", line, err)
	}
	go func() { _, _ = io.Copy(os.Stderr, r) }()
}

func startPause(t *testing.T, attr *syscall.SysProcAttr) *exec.Cmd {
	t.Helper()
	c := exec.Command(runfile.Path(t, "PAUSE"))
	c.SysProcAttr = attr
	stderr, err := c.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatalf("failed to start pause: %v", err)
	}
	t.Cleanup(func() { _ = c.Process.Kill(); _, _ = c.Process.Wait() })
	waitReady(t, stderr)
	return c
}

func TestExitsZeroOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			c := startPause(t, nil)
			// It waits rather than exiting on its own.
			if st, _, err := procStat(c.Process.Pid); err != nil || st == 'Z' {
				t.Fatalf("pause is not running (state %c, %v)", st, err)
			}
			if err := c.Process.Signal(sig); err != nil {
				t.Fatalf("failed to signal pause: %v", err)
			}
			if err := c.Wait(); err != nil {
				t.Fatalf("pause did not exit 0 on %v: %v", sig, err)
			}
		})
	}
}

// TestReapsZombies runs pause as PID 1 of a new PID namespace, as in a pod,
// makes a process there whose parent exits (so it is reparented to pause),
// lets it exit, and checks that pause reaps it. Without reaping the process
// would stay a zombie child of pause forever.
func TestReapsZombies(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (a new PID namespace); the project's tests run as root")
	}
	p := startPause(t, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID})

	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdinW.Close()
	errc := make(chan error, 1)
	go func() {
		// This thread enters pause's PID namespace for its children and is
		// never unlocked, so Go discards it when the goroutine ends.
		runtime.LockOSThread()
		ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/pid", p.Process.Pid))
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := setns(int(ns.Fd()), syscall.CLONE_NEWPID); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), modeEnv+"="+modeOrphan)
		c.Stdin = stdinR
		c.Stderr = os.Stderr
		errc <- c.Run()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("failed to make an orphan in pause's namespace: %v", err)
	}
	stdinR.Close()

	orphan := childrenOf(t, p.Process.Pid)
	if len(orphan) != 1 {
		t.Fatalf("want exactly 1 orphan reparented to pause, found %v", orphan)
	}
	// Let it exit: it becomes a zombie until its parent, pause, reaps it.
	stdinW.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, ppid, err := procStat(orphan[0])
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d still exists after 30s (state %c, parent %d): pause did not reap it", orphan[0], st, ppid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Pause is still there, and still exits cleanly.
	if err := p.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("pause (PID 1 of its namespace) did not exit 0 on SIGTERM: %v", err)
	}
}

func setns(fd, nstype int) error {
	const sysSetns = 308 // x86_64; the syscall package has no Setns.
	if _, _, e := syscall.RawSyscall(sysSetns, uintptr(fd), uintptr(nstype), 0); e != 0 {
		return e
	}
	return nil
}

// childrenOf lists the pids whose parent is pid.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, err := procStat(n); err == nil && ppid == pid {
			out = append(out, n)
		}
	}
	return out
}
