// Package earlyboot_test boots the E2E appliance's disk with a wrong
// system root hash on the kernel command line (appended after the UKI's
// own, so it wins): init's first stage cannot open the system, and must
// stop the boot with one clear error line and a power-off, never hang or
// boot on. Two ways to be wrong: a root hash whose first half names no
// partition, and one whose first half names slot A but whose tree the
// slot does not match (dm-verity refuses its first block).
package earlyboot_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/core/systemimage"
	"github.com/appliance-bundler/appliance/tests/e2e/node"
	"github.com/appliance-bundler/appliance/tests/launch"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// bootFailed is what init logs before it powers off (core/init/pid1.go).
const bootFailed = "boot failed; powering off"

func TestWrongRootHashStopsTheBoot(t *testing.T) {
	info, err := systemimage.ReadInfo(runfile.Path(t, "SYSTEM_INFO"))
	if err != nil {
		t.Fatal(err)
	}
	half := len(info.RootHash) / 2
	for name, c := range map[string]struct {
		hash string
		want []string
	}{
		// The slot's GUID, another tree.
		"tree": {info.RootHash[:half] + flip(info.RootHash[half:]), []string{"open the system partition", "does not match the root hash", "input/output error"}},
		// No slot has its GUID.
		"slot": {flip(info.RootHash[:half]) + info.RootHash[half:], []string{"open the system partition", "no partition with GUID"}},
	} {
		t.Run(name, func(t *testing.T) {
			stopsTheBoot(t, systemimage.ArgRootHash+"="+c.hash, c.want)
		})
	}
}

// flip changes the last hex digit of h.
func flip(h string) string {
	last := "0"
	if h[len(h)-1] == '0' {
		last = "1"
	}
	return h[:len(h)-1] + last
}

func stopsTheBoot(t *testing.T, arg string, want []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := node.BootWith(ctx, t, node.Extra{Append: arg})
	// Before the system is mounted there is no JSON log port: the line is
	// on the console only, for people.
	line, err := n.VM.WaitForLine(ctx, "init's boot failure", launch.ConsoleMessage("ERROR", "init", bootFailed))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s after QEMU start: %s", n.Since(), line)
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("the failure line lacks %q: %s", w, line)
		}
	}
	// The machine powers off: QEMU exits by itself.
	if err := n.VM.Wait(ctx); err != nil {
		t.Fatalf("QEMU did not exit after the failure: %v", err)
	}
	t.Logf("QEMU exited %s after start", n.Since())
	var errs []string
	for _, l := range n.VM.Lines() {
		if strings.Contains(l, "  ERROR  ") {
			errs = append(errs, l)
		}
		if strings.Contains(l, "system mounted") || strings.Contains(l, "system up") {
			t.Errorf("the boot went on after the failure: %s", l)
		}
	}
	if len(errs) != 1 {
		t.Errorf("%d error lines, want the one failure:\n%s", len(errs), strings.Join(errs, "\n"))
	}
}
