// Package runc_test checks the runc that the appliance ships: built from its
// Go module with cgo and seccomp, linked statically. It proves that cgo and
// libseccomp work in the build; it must not test runc itself.
package runc_test

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/tests/runfile"
)

func TestStaticallyLinkedWithCgo(t *testing.T) {
	f, err := elf.Open(runfile.Path(t, "RUNC"))
	if err != nil {
		t.Fatalf("failed to open runc: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("runc has a program interpreter: it is dynamically linked")
		}
	}
	// Linked by the C linker with glibc's start files, as cgo binaries are;
	// the Go linker alone writes no ABI tag note.
	if f.Section(".note.ABI-tag") == nil {
		t.Error("runc has no .note.ABI-tag section: it was not linked as a cgo binary")
	}
	// libcontainer's nsexec.c names its helper processes "nsexec-N".
	data, err := os.ReadFile(runfile.Path(t, "RUNC"))
	if err != nil {
		t.Fatalf("failed to read runc: %v", err)
	}
	if !bytes.Contains(data, []byte("nsexec-%d")) {
		t.Error("runc lacks the C code of libcontainer/nsenter: it was built without cgo")
	}
}

func TestRuns(t *testing.T) {
	out, err := exec.Command(runfile.Path(t, "RUNC"), "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("runc --version: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "runc version 1.5.2") {
		t.Fatalf("runc --version printed %q, want version 1.5.2", out)
	}
}

// The kubelet runs every pod sandbox under the RuntimeDefault seccomp
// profile: runc must say it supports seccomp, with the actions containerd's
// default profile uses.
func TestSeccomp(t *testing.T) {
	out, err := exec.Command(runfile.Path(t, "RUNC"), "features").Output()
	if err != nil {
		t.Fatalf("runc features: %v", err)
	}
	var features struct {
		Linux struct {
			Seccomp struct {
				Enabled *bool    `json:"enabled"`
				Actions []string `json:"actions"`
			} `json:"seccomp"`
		} `json:"linux"`
	}
	if err := json.Unmarshal(out, &features); err != nil {
		t.Fatalf("runc features printed %q: %v", out, err)
	}
	sc := features.Linux.Seccomp
	if sc.Enabled == nil || !*sc.Enabled {
		t.Fatalf("runc features: seccomp not enabled: %s", out)
	}
	for _, a := range []string{"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"} {
		if !slices.Contains(sc.Actions, a) {
			t.Errorf("runc features: seccomp actions %q lack %s", sc.Actions, a)
		}
	}
}
