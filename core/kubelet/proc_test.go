package kubelet

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// Processes finds a real process by the path of its executable, and only
// the processes of that executable.
func TestProcesses(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	src, err := filepath.EvalSymlinks(sleep)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "kubelet")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	before, err := Processes("/proc", bin)
	if err != nil || len(before) != 0 {
		t.Fatalf("Processes before start = %v, %v, want none", before, err)
	}
	cmd := exec.Command(bin, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	other := exec.Command(src, "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		other.Process.Kill()
		cmd.Wait()
		other.Wait()
	})
	pids, err := Processes("/proc", bin)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pids, []int{cmd.Process.Pid}) {
		t.Errorf("Processes = %v, want [%d] (not the other sleep, %d)", pids, cmd.Process.Pid, other.Process.Pid)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if pids, err := Processes("/proc", bin); err != nil || len(pids) != 0 {
		t.Errorf("Processes after the kill = %v, %v, want none", pids, err)
	}
}
