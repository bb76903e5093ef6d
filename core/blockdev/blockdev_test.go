package blockdev

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// write makes the sysfs file at path (below sys) hold content.
func write(t *testing.T, sys, path, content string) {
	t.Helper()
	p := filepath.Join(sys, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Laid out as the kernel does: /sys/block/<disk>/<part>/partition holds
// the number; other entries of the disk's directory hold none.
func TestPartition(t *testing.T) {
	sys := t.TempDir()
	write(t, sys, "vda/vda1/partition", "1\n")
	write(t, sys, "vda/vda12/partition", "12\n")
	write(t, sys, "vda/queue/rotational", "1\n")
	for n, want := range map[int]string{1: "vda1", 12: "vda12", 2: ""} {
		if got := Partition(sys, "vda", n); got != want {
			t.Errorf("Partition(vda, %d) = %q, want %q", n, got, want)
		}
	}
	if got := Partition(sys, "vdb", 1); got != "" {
		t.Errorf("a partition of a missing disk: %q", got)
	}
}

func TestDMNode(t *testing.T) {
	sys := t.TempDir()
	write(t, sys, "dm-0/dm/name", "layer-x\n")
	write(t, sys, "dm-1/dm/name", "system\n")
	if got, err := DMNode(sys, "/dev", "system"); err != nil || got != "/dev/dm-1" {
		t.Errorf("DMNode = %q, %v", got, err)
	}
	if _, err := DMNode(sys, "/dev", "other"); err == nil {
		t.Error("a missing dm device is found")
	}
}

// Disks leaves out the devices that hold no partition table of ours.
func TestDisks(t *testing.T) {
	sys := t.TempDir()
	for _, d := range []string{"vda", "nvme0n1", "loop0", "dm-1", "ram0", "zram0", "sr0"} {
		write(t, sys, d+"/size", "1\n")
	}
	got, err := Disks(sys)
	if err != nil || !slices.Equal(got, []string{"nvme0n1", "vda"}) {
		t.Errorf("Disks = %q, %v; want nvme0n1 and vda", got, err)
	}
	if _, err := Disks(filepath.Join(sys, "missing")); err == nil {
		t.Error("a missing sysfs listed")
	}
}
