// Package gosdk_test holds the Go SDK pin: the SDK that Bazel compiles with
// must be the Go release that go.mod's go directive names (major.minor).
// MODULE.bazel takes the SDK from the machine (go_sdk.host), so this test is
// what turns a drifted SDK into a failure instead of a silent change.
package gosdk_test

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"

	"github.com/appliance-bundler/appliance/tests/runfile"
)

func TestSDKMatchesGoMod(t *testing.T) {
	path := runfile.Path(t, "GO_MOD")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("failed to read go.mod: %v", err)
	}
	f, err := modfile.ParseLax(path, data, nil)
	if err != nil {
		t.Fatalf("failed to parse %s: %v", path, err)
	}
	if f.Go == nil {
		t.Fatalf("%s has no go directive", path)
	}
	parts := strings.SplitN(f.Go.Version, ".", 3)
	if len(parts) < 2 {
		t.Fatalf("%s: go directive %q has no minor version", path, f.Go.Version)
	}
	want := "go" + parts[0] + "." + parts[1]
	got := runtime.Version()
	if got != want && !strings.HasPrefix(got, want+".") {
		t.Fatalf("Bazel's Go SDK is %s, but go.mod pins %s", got, want)
	}
}
