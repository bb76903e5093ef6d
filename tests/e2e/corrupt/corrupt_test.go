// Package corrupt_test boots the appliance with a bundle corrupted at rest
// beside the good ones (listed in the build's manifest, then one byte of it
// flipped): the node's status reports that bundle refused, by file and
// reason, its image is not there, and the hello pod still starts from the
// good ones.
package corrupt_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/core/preseed/status"
	"github.com/appliance-bundler/appliance/tests/e2e/node"
)

func TestCorruptBundleIsReportedAndPodStillStarts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	n := node.Boot(ctx, t)
	st := n.PreseedStatus(ctx)
	t.Logf("preseed done %s after QEMU start: imported %d, failed %d", n.Since(), st.Imported, st.Failed)
	if st.Imported != 2 || st.Failed != 1 {
		t.Fatalf("preseed imported %d and failed %d, want 2 and 1: %+v", st.Imported, st.Failed, st.Bundles)
	}
	var bad *status.Bundle
	for i, b := range st.Bundles {
		if b.Result == status.ResultFailed {
			bad = &st.Bundles[i]
		}
	}
	if bad == nil || !strings.HasSuffix(bad.File, "corrupt.tar") || bad.Namespace != "k8s.io" {
		t.Fatalf("failed bundle = %+v, want corrupt.tar in k8s.io", bad)
	}
	// Listed in the manifest, so refused for its changed bytes, not for
	// being unknown.
	if strings.Contains(bad.Error, "not in the preseed manifest") ||
		!(strings.Contains(bad.Error, "does not match its digest") || strings.Contains(bad.Error, "differs from the preseed manifest")) {
		t.Fatalf("corrupt.tar refused for %q, want a digest or manifest mismatch", bad.Error)
	}
	t.Logf("the node reports: %s (%s): %s", bad.File, bad.Namespace, bad.Error)
	n.CheckPreseededImages(ctx, t, node.HelloImage, node.PauseImage)
	n.CheckAbsent(ctx, t, "docker.io/library/corrupt:1.0")
	if exit, log := n.RunHello(ctx, t); exit != 0 {
		t.Errorf("hello exited with %d, want 0; log: %s", exit, log)
	}
}
