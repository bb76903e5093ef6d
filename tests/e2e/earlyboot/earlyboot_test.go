// Package earlyboot_test boots the E2E appliance with a root tmpfs too
// small for the initramfs (appliance.root_size): init cannot move its root
// off the initramfs, and must stop the boot with one clear error line and
// a power-off, instead of booting on a half-copied root.
package earlyboot_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/tests/e2e/node"
	"github.com/appliance-bundler/appliance/tests/launch"
)

// bootFailed is what init logs before it powers off (core/init/pid1.go).
const bootFailed = "boot failed; powering off"

func TestRootTooSmallStopsTheBoot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := node.BootWith(ctx, t, node.Extra{Append: "appliance.root_size=16M"})
	// Before the root is moved, /dev is not mounted: the line is on the
	// console only, for people.
	line, err := n.VM.WaitForLine(ctx, "init's boot failure", launch.ConsoleMessage("ERROR", "init", bootFailed))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s after QEMU start: %s", n.Since(), line)
	for _, want := range []string{"move the root off the initramfs", "no space left on device", "size=16M"} {
		if !strings.Contains(line, want) {
			t.Errorf("the failure line lacks %q: %s", want, line)
		}
	}
	// The machine powers off: QEMU exits by itself.
	if err := n.VM.Wait(ctx); err != nil {
		t.Fatalf("QEMU did not exit after the failure: %v", err)
	}
	t.Logf("QEMU exited %s after start", n.Since())
	var errs []string
	for _, l := range n.VM.Lines() {
		// init's error lines on the console (no JSON port yet).
		if strings.Contains(l, "  ERROR  ") {
			errs = append(errs, l)
		}
		if strings.Contains(l, "system up") || strings.Contains(l, "supervisor process started") {
			t.Errorf("the boot went on after the failure: %s", l)
		}
	}
	if len(errs) != 1 {
		t.Errorf("%d error lines, want the one failure:\n%s", len(errs), strings.Join(errs, "\n"))
	}
}
