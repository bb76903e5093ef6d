// Package datapart_test boots the E2E disk to check the data partition
// that init makes at first boot (core/datapartition): the first boot adds
// and formats it and keeps the node's state on it; a second boot of the
// same disk finds it, formats nothing, and has the same machine ID and the
// images already imported; a power cut right after the partition is added,
// before it is formatted, leaves a disk whose next boot completes; a disk
// with no room for it, or a partition that does not mount, stops the boot
// with one error naming the sizes, or the device and the reason.
package datapart_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/tests/e2e/node"
	"github.com/appliance-bundler/appliance/tests/launch"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// init's log lines (core/init, core/datapartition).
const (
	added     = "data partition added"
	formatted = "data partition formatted"
	mounted   = "data partition mounted"
)

type machineID struct {
	ID         string `json:"machine_id"`
	Persistent bool   `json:"persistent"`
}

// bootUntilMachineID boots state until init logs the machine ID, which
// comes after the data partition is mounted.
func bootUntilMachineID(ctx context.Context, t *testing.T, state string) (*node.Node, machineID) {
	t.Helper()
	n := node.BootWith(ctx, t, node.Extra{State: state})
	line, err := n.VM.WaitForLine(ctx, "init's machine ID", launch.LogMessage("init", "machine ID"))
	if err != nil {
		t.Fatal(err)
	}
	var id machineID
	if err := json.Unmarshal([]byte(line), &id); err != nil || !id.Persistent {
		t.Fatalf("machine ID line %s (%v): want one kept on the data partition", line, err)
	}
	return n, id
}

// logged tells whether init logged msg during n's boot.
func logged(n *node.Node, msg string) bool {
	match := launch.LogMessage("init", msg)
	for _, l := range n.VM.Lines() {
		if match(l) {
			return true
		}
	}
	return false
}

func TestDataPartitionMadeOnceAndKept(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	state := filepath.Join(t.TempDir(), "disk.raw")

	n, first := bootUntilMachineID(ctx, t, state)
	for _, msg := range []string{added, formatted, mounted} {
		if !logged(n, msg) {
			t.Errorf("first boot: init did not log %q", msg)
		}
	}
	st := n.PreseedStatus(ctx)
	t.Logf("first boot: machine ID %s, preseed imported %d, skipped %d, %s after QEMU start", first.ID, st.Imported, st.Skipped, n.Since())
	if st.Imported == 0 || st.Failed != 0 {
		t.Errorf("first boot: preseed imported %d, failed %d", st.Imported, st.Failed)
	}
	if err := n.VM.PowerDown(ctx); err != nil {
		t.Fatal(err)
	}
	// QEMU holds the disk's lock until it exits.
	if err := n.VM.Wait(ctx); err != nil {
		t.Fatal(err)
	}

	n, second := bootUntilMachineID(ctx, t, state)
	if !logged(n, mounted) || logged(n, added) || logged(n, formatted) {
		t.Errorf("second boot: mounted %v, added %v, formatted %v; want only mounted", logged(n, mounted), logged(n, added), logged(n, formatted))
	}
	if second.ID != first.ID {
		t.Errorf("second boot: machine ID %s, the first's was %s", second.ID, first.ID)
	}
	st2 := n.PreseedStatus(ctx)
	t.Logf("second boot: preseed imported %d, skipped %d", st2.Imported, st2.Skipped)
	if st2.Imported != 0 || st2.Skipped != st.Imported {
		t.Errorf("second boot: preseed imported %d, skipped %d; want 0 and the first boot's %d (containerd's state kept)", st2.Imported, st2.Skipped, st.Imported)
	}
}

// SIGKILL of QEMU as soon as the partition is in the GPT, before mke2fs
// has run (or while it runs): the next boot formats it and completes.
func TestPowerCutBeforeFormatting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	state := filepath.Join(t.TempDir(), "disk.raw")
	n := node.BootWith(ctx, t, node.Extra{State: state})
	if _, err := n.VM.WaitForLine(ctx, "the partition added", launch.LogMessage("init", added)); err != nil {
		t.Fatal(err)
	}
	n.VM.Kill()
	t.Logf("SIGKILL right after %q (QEMU start + %s)", added, n.Since())

	n, _ = bootUntilMachineID(ctx, t, state)
	if logged(n, added) || !logged(n, mounted) {
		t.Errorf("after the power cut: added %v, mounted %v; want the partition found and mounted", logged(n, added), logged(n, mounted))
	}
	t.Logf("after the power cut: formatted %v (false: mke2fs had finished before the kill)", logged(n, formatted))
	if st := n.PreseedStatus(ctx); st.Failed != 0 || st.Imported+st.Skipped == 0 {
		t.Errorf("after the power cut: preseed %+v", st)
	}
}

func TestDiskTooSmallStopsTheBoot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fi, err := os.Stat(runfile.Path(t, "DISK"))
	if err != nil {
		t.Fatal(err)
	}
	// The image's own size: no room after the slots.
	n := node.BootWith(ctx, t, node.Extra{DiskSize: fi.Size()})
	line, err := n.VM.WaitForLine(ctx, "init's boot failure", launch.ConsoleMessage("ERROR", "init", "boot failed; powering off"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s after QEMU start: %s", n.Since(), line)
	for _, want := range []string{"set up the state", "disk too small for the data partition", "it needs at least"} {
		if !strings.Contains(line, want) {
			t.Errorf("the failure line lacks %q", want)
		}
	}
	if err := n.VM.Wait(ctx); err != nil {
		t.Fatalf("QEMU did not exit after the failure: %v", err)
	}
}

// A data partition whose ext4 does not mount (its superblock's block size
// made nonsense, its magic kept) stops the boot with one error naming the
// device and the reason, and is left as it was: never formatted over.
func TestUnmountableDataPartitionStopsTheBoot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	state := filepath.Join(t.TempDir(), "disk.raw")
	n, _ := bootUntilMachineID(ctx, t, state)
	// Up (init watches the power button by then), and containerd's state
	// written to the partition.
	n.PreseedStatus(ctx)
	if err := n.VM.PowerDown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.VM.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	offset, _ := node.DataPartition(t, state)
	f, err := os.OpenFile(state, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// s_log_block_size, at byte 24 of the superblock (byte 1024).
	if _, err := f.WriteAt([]byte{100, 0, 0, 0}, offset+1024+24); err != nil {
		t.Fatal(err)
	}
	before := make([]byte, 1<<20)
	if _, err := f.ReadAt(before, offset); err != nil {
		t.Fatal(err)
	}
	f.Close()

	n = node.BootWith(ctx, t, node.Extra{State: state})
	line, err := n.VM.WaitForLine(ctx, "init's boot failure", launch.ConsoleMessage("ERROR", "init", "boot failed; powering off"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s after QEMU start: %s", n.Since(), line)
	for _, want := range []string{"failed to mount the data partition /dev/vda4", "invalid argument", "left as it is"} {
		if !strings.Contains(line, want) {
			t.Errorf("the failure line lacks %q", want)
		}
	}
	if err := n.VM.Wait(ctx); err != nil {
		t.Fatalf("QEMU did not exit after the failure: %v", err)
	}
	after := make([]byte, 1<<20)
	f, err = os.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(after, offset); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the data partition's first MiB changed: it was written to after it failed to mount")
	}
}
