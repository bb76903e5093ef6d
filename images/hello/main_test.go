package main

import (
	"os"
	"os/exec"
	"testing"

	"github.com/bazelbuild/rules_go/go/runfiles"
)

// TestPrintsGreeting runs the built binary (the one the image holds), not
// main() in this process, so its exit code is checked too.
func TestPrintsGreeting(t *testing.T) {
	bin, err := runfiles.Rlocation(os.Getenv("HELLO"))
	if err != nil || os.Getenv("HELLO") == "" {
		t.Fatalf("hello binary not in runfiles (%v): run with bazel test", err)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("hello failed: %v", err)
	}
	if string(out) != Greeting+"\n" {
		t.Fatalf("hello printed %q, want %q", out, Greeting+"\n")
	}
}
