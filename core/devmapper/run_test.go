package devmapper

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"

	"github.com/appliance-bundler/appliance/core/supervisor"
)

// needRoot skips a test that needs the real kernel interfaces root has: a
// uevent socket, sysfs uevent triggers, /dev/kmsg.
func needRoot(t *testing.T, paths ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("needs %s: %v", p, err)
		}
	}
}

// A uevent the kernel sends (here for a "change" written to a device's
// uevent file) arrives on the socket, from port 0, and parses.
func TestKernelUeventIsReceived(t *testing.T) {
	const trigger = "/sys/devices/virtual/mem/null/uevent"
	needRoot(t, trigger)
	sock, err := openUevents()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	rc, err := sock.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(trigger, []byte("change"), 0o200); err != nil {
		t.Fatal(err)
	}
	sock.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, maxUevent)
	for {
		n, fromKernel, err := recvKernel(rc, buf)
		if err != nil {
			t.Fatalf("no uevent for %s: %v", trigger, err)
		}
		ev, err := ParseUevent(buf[:n])
		if err != nil {
			t.Fatalf("ParseUevent(%q): %v", buf[:n], err)
		}
		if ev.DevPath == "/devices/virtual/mem/null" && ev.Action == "change" {
			if !fromKernel || ev.Env["DEVNAME"] != "null" {
				t.Fatalf("uevent %+v, from kernel %v", ev, fromKernel)
			}
			return
		}
	}
}

// runUnder runs r as the supervisor's root and waits until it is healthy;
// cancelling the returned function stops it and waits for it.
func runUnder(t *testing.T, r supervisor.Runnable) (*observer.ObservedLogs, func()) {
	t.Helper()
	logger, logs := observed()
	ctx, cancel := context.WithCancel(context.Background())
	healthy := make(chan struct{}, 1)
	s := supervisor.New(ctx, logger, r, supervisor.WithObserver(func(name string, st supervisor.State) {
		if st == supervisor.StateHealthy {
			select {
			case healthy <- struct{}{}:
			default:
			}
		}
	}))
	select {
	case <-healthy:
	case <-time.After(10 * time.Second):
		cancel()
		s.Wait()
		t.Fatalf("not healthy after 10 s: %v", logs.All())
	}
	return logs, func() {
		cancel()
		done := make(chan struct{})
		go func() { s.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("did not stop within 10 s of cancel")
		}
	}
}

// Links links what there is before it is healthy and stops on cancel, its
// socket read pending.
func TestLinksRunScansAndStops(t *testing.T) {
	needRoot(t)
	k := newFakeKernel(t)
	k.dm("dm-0", "253:0", "containerd-erofs-aa", "")
	_, stop := runUnder(t, Links{Sys: k.sys, Dev: k.dev}.Run)
	if got := linkTo(t, k, "containerd-erofs-aa"); got != "../dm-0" {
		t.Errorf("link -> %q, want ../dm-0", got)
	}
	stop()
}

// VerityLog reads the real kernel log: a corruption line written to it is
// logged with the layer (resolved in a fake sysfs), and it stops on cancel.
func TestVerityLogFollowsTheKernelLog(t *testing.T) {
	needRoot(t, DefaultKmsg)
	k := newFakeKernel(t)
	blob := "/containerd/erofs-cache/sha256/9c/" + hexID + ".erofs"
	k.loop("loop200", "7:200", blob)
	k.dm("dm-200", "253:200", "containerd-erofs-test", "loop200")
	logs, stop := runUnder(t, VerityLog{Sys: k.sys}.Run)
	defer stop()
	block := time.Now().UnixNano()
	line := fmt.Sprintf("device-mapper: verity: 7:200: data block %d is corrupted\n", block)
	if err := os.WriteFile(DefaultKmsg, []byte(line), 0); err != nil {
		t.Fatalf("failed to write to %s: %v", DefaultKmsg, err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, e := range logs.FilterMessage("dm-verity: corrupted block in a layer blob").All() {
			if e.ContextMap()["block"] == uint64(block) {
				if f := fieldsOf(e); f["diff_id"] != "sha256:"+hexID || f["name"] != "containerd-erofs-test" {
					t.Fatalf("fields = %v", f)
				}
				return
			}
		}
	}
	t.Fatalf("the corruption line was not logged: %v", logs.All())
}

// A VerityLog started again with the cursor of the one before reads the
// kernel log from its start but does not report the corruption the first
// one logged: only the one that came after.
func TestVerityLogRestartReportsOnlyNewCorruptions(t *testing.T) {
	needRoot(t, DefaultKmsg)
	k := newFakeKernel(t)
	k.loop("loop201", "7:201", "/containerd/erofs-cache/sha256/9c/"+hexID+".erofs")
	k.dm("dm-201", "253:201", "containerd-erofs-restart", "loop201")
	v := VerityLog{Sys: k.sys, Cursor: filepath.Join(t.TempDir(), "kmsg-cursor")}
	first, second := uint64(time.Now().UnixNano()), uint64(time.Now().UnixNano()+1)
	corrupt := func(block uint64) {
		line := fmt.Sprintf("device-mapper: verity: 7:201: data block %d is corrupted\n", block)
		if err := os.WriteFile(DefaultKmsg, []byte(line), 0); err != nil {
			t.Fatalf("failed to write to %s: %v", DefaultKmsg, err)
		}
	}
	logs, stop := runUnder(t, v.Run)
	corrupt(first)
	waitBlockLogged(t, logs, first)
	stop()

	logs, stop = runUnder(t, v.Run)
	defer stop()
	corrupt(second)
	waitBlockLogged(t, logs, second)
	if n := blockLogged(logs, first); n != 0 {
		t.Errorf("after the restart, the old corruption of block %d was logged again %d times", first, n)
	}
}

func blockLogged(logs *observer.ObservedLogs, block uint64) int {
	n := 0
	for _, e := range logs.FilterMessage("dm-verity: corrupted block in a layer blob").All() {
		if e.ContextMap()["block"] == block {
			n++
		}
	}
	return n
}

func waitBlockLogged(t *testing.T, logs *observer.ObservedLogs, block uint64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); blockLogged(logs, block) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the corruption of block %d was not logged: %v", block, logs.All())
		}
	}
}
