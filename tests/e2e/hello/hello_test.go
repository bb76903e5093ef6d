// Package hello_test is the E2E proof: the appliance (E2E variant) boots
// under QEMU with no route out of the VM, imports its preseeded bundles, and
// a hello-world pod runs from them without any PullImage call.
package hello_test

import (
	"context"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/tests/e2e/node"
	"github.com/appliance-bundler/appliance/tests/launch"
)

func TestHelloPodFromPreseededImagesOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := node.Boot(ctx, t)
	if _, err := n.VM.WaitForLine(ctx, "containerd ready", launch.LogMessage("supervisor.root.containerd", "containerd ready")); err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd up %s after QEMU start", n.Since())
	st := n.PreseedStatus(ctx)
	t.Logf("preseed done %s after QEMU start: imported %d, skipped %d, failed %d", n.Since(), st.Imported, st.Skipped, st.Failed)
	if st.Imported != 2 || st.Failed != 0 {
		t.Errorf("preseed imported %d and failed %d, want 2 and 0: %+v", st.Imported, st.Failed, st.Bundles)
	}
	n.CheckPreseededImages(ctx, t, node.HelloImage, node.PauseImage)
	exit, log := n.RunHello(ctx, t)
	if exit != 0 {
		t.Errorf("hello exited with %d, want 0; log: %s", exit, log)
	}
	t.Logf("hello's log: %q", log)
}
