package bundleformat_test

import (
	"os"
	"testing"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// The checked-in build/oci/bundle_format.bzl is what the Go table makes:
// Starlark holds no copy of the format that could drift.
func TestStarlarkUpToDate(t *testing.T) {
	p := "../../build/oci/bundle_format.bzl" // a host `go test` runs in this directory
	if os.Getenv("BUNDLE_FORMAT_BZL") != "" {
		p = runfile.Path(t, "BUNDLE_FORMAT_BZL")
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := bundleformat.Starlark(); string(got) != string(want) {
		t.Errorf("build/oci/bundle_format.bzl is stale; regenerate it from the repository root with\n  %s\nwant:\n%s", bundleformat.StarlarkCommand, want)
	}
}
