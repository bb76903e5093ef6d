// Package persist_test boots the appliance twice over one disk kept across
// boots, whose data partition (ext4, made at the first boot) holds
// containerd's state: the first boot imports the
// preseeded bundles, the second finds them imported and unpacked (every
// record's snapshots there before any pod asks for them), skips them
// reading less of the bundles, and still runs the hello pod. Each clean
// power-off must leave a clean filesystem (e2fsck). How long each preseed
// took, and the time to Done, are logged, not asserted: speed is the
// bench's (tools/bazel run //tests/bench/preseed), not a timed test's.
package persist_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/core/preseed/status"
	"github.com/appliance-bundler/appliance/tests/e2e/node"
)

// boot boots over the disk and returns the preseed status and the time from
// QEMU start to preseed Done; it powers the node off cleanly.
func boot(ctx context.Context, t *testing.T, disk string, runHello bool) (*status.Status, time.Duration) {
	t.Helper()
	n := node.BootWith(ctx, t, node.Extra{State: disk})
	st := n.PreseedStatus(ctx)
	done := n.Since()
	t.Logf("preseed done %s after QEMU start: imported %d, skipped %d, failed %d, preseed took %.3f s",
		done, st.Imported, st.Skipped, st.Failed, st.Duration)
	// Unpacked, every one, before any pod: the CRI would unpack on demand
	// at a pod's start and hide a snapshot lost across the reboot.
	n.CheckWhole(ctx, t)
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
	checkClean(t, disk)
	return st, done
}

// sbinTool finds a tool of the toolchain root: Bazel's action PATH has no
// sbin directory.
func sbinTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	return filepath.Join("/usr/sbin", name)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// checkClean fails the test unless a read-only forced e2fsck of the disk's
// data partition finds nothing to report.
func checkClean(t *testing.T, disk string) {
	t.Helper()
	disk = node.ExtractDataPartition(t, disk)
	// The only lines a clean forced check prints: the version, the passes
	// and the summary. Anything else (a skipped journal recovery, orphan
	// inodes, wrong counts, a question) means the disk was left dirty.
	fsckQuiet := regexp.MustCompile(`^(e2fsck \d.*|Pass \d[A-Z]?: .*|\S+: \d+/\d+ files .*)$`)
	out, err := exec.Command(sbinTool("e2fsck"), "-n", "-f", disk).CombinedOutput()
	t.Logf("e2fsck -n -f %s: exit %v\n%s", filepath.Base(disk), err, out)
	if err != nil {
		t.Errorf("e2fsck of the data partition after a clean power-off failed: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !fsckQuiet.MatchString(line) {
			t.Errorf("e2fsck of the data partition after a clean power-off reports: %q", line)
		}
	}
}

func TestSecondBootSkipsImport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	// The VM's disk, kept across the two boots: the first makes it from
	// the appliance's image.
	disk := filepath.Join(t.TempDir(), "state.raw")

	first, firstDone := boot(ctx, t, disk, false)
	if first.Imported != 3 || first.Skipped != 0 || first.Failed != 0 {
		t.Fatalf("first boot: imported %d, skipped %d, failed %d; want 3, 0, 0", first.Imported, first.Skipped, first.Failed)
	}
	second, secondDone := boot(ctx, t, disk, true)
	if second.Imported != 0 || second.Skipped != 3 || second.Failed != 0 {
		t.Fatalf("second boot: imported %d, skipped %d, failed %d; want 0, 3, 0", second.Imported, second.Skipped, second.Failed)
	}
	// The bundles hold no layer (their layers are in the EROFS cache):
	// importing reads their metadata and JSON blobs, skipping reads less.
	if second.Bytes >= first.Bytes {
		t.Errorf("second boot read %d bytes of bundles, the first %d: skipping read as much as importing", second.Bytes, first.Bytes)
	}
	t.Logf("preseed: first boot %.3f s (%d bytes read, Done %s after QEMU start), second boot %.3f s (%d bytes read, Done %s after QEMU start)",
		first.Duration, first.Bytes, firstDone, second.Duration, second.Bytes, secondDone)
}
