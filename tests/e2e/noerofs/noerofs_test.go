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
)

func TestKernelWithoutErofsIsAClearError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := node.BootWith(ctx, t, node.Extra{Append: "module_blacklist=erofs"})
	line, err := n.VM.WaitForLine(ctx, "an error saying EROFS is missing", func(l string) bool {
		return strings.Contains(l, `"level":"error"`) && strings.Contains(strings.ToLower(l), "erofs")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s after QEMU start the node logs: %s", n.Since(), line)
	// The boot went on: the status server answers.
	node.Eventually(ctx, t, "the node's memory status", func(ctx context.Context) error {
		_, _, err := n.Memory(ctx)
		return err
	})
}
