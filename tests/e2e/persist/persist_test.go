// Package persist_test boots the appliance twice over one persistent disk
// (virtio-blk, ext4) holding containerd's state: the first boot imports the
// preseeded bundles, the second finds them imported and unpacked, skips them
// without reading their layers, is faster to preseed Done, and still runs the
// hello pod.
package persist_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/core/preseed"
	"github.com/appliance-bundler/appliance/tests/e2e/node"
)

// boot boots over the disk and returns the preseed status and the time from
// QEMU start to preseed Done; it powers the node off cleanly.
func boot(ctx context.Context, t *testing.T, disk string, runHello bool) (*preseed.Status, time.Duration) {
	t.Helper()
	n := node.BootWith(ctx, t, node.Extra{Disks: []string{disk}, Append: "appliance.state_disk=/dev/vda"})
	st := n.PreseedStatus(ctx)
	done := n.Since()
	t.Logf("preseed done %s after QEMU start: imported %d, skipped %d, failed %d, preseed took %.3f s",
		done, st.Imported, st.Skipped, st.Failed, st.Duration)
	if runHello {
		if exit, log := n.RunHello(ctx, t); exit != 0 {
			t.Errorf("hello exited with %d; log: %s", exit, log)
		}
	}
	if err := n.VM.PowerDown(ctx); err != nil {
		t.Fatalf("power button: %v", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := n.VM.Wait(waitCtx); err != nil {
		t.Fatalf("the node did not power off cleanly: %v", err)
	}
	return st, done
}

func TestSecondBootSkipsImport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	disk := filepath.Join(t.TempDir(), "state.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 2<<30); err != nil {
		t.Fatal(err)
	}
	// Bazel's action PATH has no sbin directory.
	mkfs := "/usr/sbin/mkfs.ext4"
	if p, err := exec.LookPath("mkfs.ext4"); err == nil {
		mkfs = p
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-L", "containerd", disk).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}

	first, firstDone := boot(ctx, t, disk, false)
	if first.Imported != 2 || first.Skipped != 0 || first.Failed != 0 {
		t.Fatalf("first boot: imported %d, skipped %d, failed %d; want 2, 0, 0", first.Imported, first.Skipped, first.Failed)
	}
	second, secondDone := boot(ctx, t, disk, true)
	if second.Imported != 0 || second.Skipped != 2 || second.Failed != 0 {
		t.Fatalf("second boot: imported %d, skipped %d, failed %d; want 0, 2, 0", second.Imported, second.Skipped, second.Failed)
	}
	// Skipping reads the bundles' metadata only (the JSON blobs before the
	// layers), a few KiB each.
	if second.Bytes >= first.Bytes/10 {
		t.Errorf("second boot read %d bytes of bundles, the first %d: the layers were read again", second.Bytes, first.Bytes)
	}
	if second.Duration >= first.Duration {
		t.Errorf("second preseed took %.3f s, not less than the first's %.3f s", second.Duration, first.Duration)
	}
	t.Logf("preseed: first boot %.3f s (%d bytes read, Done %s after QEMU start), second boot %.3f s (%d bytes read, Done %s after QEMU start)",
		first.Duration, first.Bytes, firstDone, second.Duration, second.Bytes, secondDone)
}
