package main

import (
	"os/exec"
	"testing"

	"github.com/appliance-bundler/appliance/tests/runfile"
)

// TestPrintsGreeting runs the built binary (the one the image holds), not
// main() in this process, so its exit code is checked too.
func TestPrintsGreeting(t *testing.T) {
	bin := runfile.Path(t, "HELLO")
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("hello failed: %v", err)
	}
	if string(out) != Greeting+"\n" {
		t.Fatalf("hello printed %q, want %q", out, Greeting+"\n")
	}
}
