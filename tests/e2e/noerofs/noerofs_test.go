// Package noerofs_test boots the E2E appliance on a kernel that cannot load
// erofs (the kernel's own module_blacklist=erofs): no preseeded image can be
// mounted, and the node must say so, clearly and once at boot, and go on
// booting (its status server answers) instead of hanging.
package noerofs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/tests/e2e/node"
	"github.com/appliance-bundler/appliance/tests/launch"
)

// The error PID 1 logs, and the line the containerd runnable adds once it
// is waiting (which shows that the supervisor got that far).
const (
	erofsError = "EROFS is unavailable; containerd will not start until it is"
	gateLine   = "containerd waits for erofs, which the kernel lacks (see PID 1's error)"
)

func TestKernelWithoutErofsIsAClearError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := node.BootWith(ctx, t, node.Extra{Append: "module_blacklist=erofs"})
	line, err := n.VM.WaitForLine(ctx, "PID 1's error saying EROFS is missing", launch.LogMessage("init", erofsError))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s after QEMU start the node logs: %s", n.Since(), line)
	if !strings.Contains(line, `"level":"error"`) || !strings.Contains(line, "module_blacklist") {
		t.Errorf("the line is not an error naming the cause (module_blacklist): %s", line)
	}
	if _, err := n.VM.WaitForLine(ctx, "the containerd runnable waiting", launch.LogMessage("supervisor.root.containerd", gateLine)); err != nil {
		t.Fatal(err)
	}
	// The boot went on: the status server answers.
	node.Eventually(ctx, t, "the node's memory status", func(ctx context.Context) error {
		_, _, err := n.Memory(ctx)
		return err
	})
	// Once: by now a runnable failing for it would have logged again at
	// each restart (the supervisor's first backoffs are 0.5, 1 and 2 s).
	var errs []string
	for _, l := range n.VM.Lines() {
		if strings.Contains(l, `"level":"error"`) && strings.Contains(strings.ToLower(l), "erofs") {
			errs = append(errs, l)
		}
	}
	if len(errs) != 1 {
		t.Errorf("%d error lines mention erofs, want PID 1's one:\n%s", len(errs), strings.Join(errs, "\n"))
	}
}
