package node_test

import (
	"os"
	"testing"

	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// The checked-in build/appliance/node.bzl is what this package makes:
// Starlark holds no copy of the settings that could drift.
func TestStarlarkUpToDate(t *testing.T) {
	p := "../../build/appliance/node.bzl" // a host `go test` runs in this directory
	if os.Getenv("NODE_BZL") != "" {
		p = runfile.Path(t, "NODE_BZL")
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := node.Starlark(); string(got) != string(want) {
		t.Errorf("build/appliance/node.bzl is stale; regenerate it from the repository root with\n  %s\nwant:\n%s", node.StarlarkCommand, want)
	}
}
