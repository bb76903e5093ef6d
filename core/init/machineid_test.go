package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The ID is kept on the state disk and used again on the next boot; without
// one it is new each boot; a damaged kept ID is replaced.
func TestMachineIDPersistsOnTheStateDisk(t *testing.T) {
	etc := filepath.Join(t.TempDir(), "machine-id")
	disk := t.TempDir()
	first, err := ensureMachineID(etc, disk)
	if err != nil {
		t.Fatal(err)
	}
	if !validMachineID(first) {
		t.Fatalf("machine ID %q is not 32 lowercase hex digits", first)
	}
	again, err := ensureMachineID(etc, disk)
	if err != nil || again != first {
		t.Fatalf("second boot with the same state disk: %q, %v; want %q", again, err, first)
	}
	if b, _ := os.ReadFile(etc); string(b) != first+"\n" {
		t.Errorf("%s holds %q, want %q", etc, b, first+"\n")
	}
	os.WriteFile(filepath.Join(disk, "machine-id"), []byte("not an id\n"), 0o444)
	if fixed, err := ensureMachineID(etc, disk); err != nil || fixed == first || !validMachineID(fixed) {
		t.Errorf("damaged kept ID: got %q, %v; want a new valid one", fixed, err)
	}
	a, _ := ensureMachineID(etc, "")
	b, _ := ensureMachineID(etc, "")
	if a == b {
		t.Errorf("without a state disk two boots got the same ID %q", a)
	}
}
