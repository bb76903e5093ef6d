// Package noerofs_test boots the E2E appliance's disk on a kernel that
// cannot load erofs (the kernel's own module_blacklist=erofs). The system
// partition is an EROFS: without it there is no system to run, so init's
// first stage must say so, clearly and once, naming the cause, and power
// the machine off instead of hanging.
package noerofs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/tests/e2e/node"
	"github.com/appliance-bundler/appliance/tests/launch"
)

func TestKernelWithoutErofsIsAClearError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := node.BootWith(ctx, t, node.Extra{Append: "module_blacklist=erofs"})
	// Before the system is mounted there is no JSON log port: the line is
	// on the console.
	line, err := n.VM.WaitForLine(ctx, "init's boot failure", launch.ConsoleMessage("ERROR", "init", "boot failed; powering off"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s after QEMU start the node logs: %s", n.Since(), line)
	for _, want := range []string{"open the system partition", "erofs", "module_blacklist"} {
		if !strings.Contains(line, want) {
			t.Errorf("the failure line lacks %q: %s", want, line)
		}
	}
	if err := n.VM.Wait(ctx); err != nil {
		t.Fatalf("QEMU did not exit after the failure: %v", err)
	}
	var errs []string
	for _, l := range n.VM.Lines() {
		if strings.Contains(l, "  ERROR  ") {
			errs = append(errs, l)
		}
	}
	if len(errs) != 1 {
		t.Errorf("%d error lines, want the one failure:\n%s", len(errs), strings.Join(errs, "\n"))
	}
}
