package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/appliance-bundler/appliance/tests/runfile"
)

// Each checked-in generated file is what its package makes: Starlark holds
// no copy of a contract that could drift.
func TestGeneratedUpToDate(t *testing.T) {
	for name, f := range generated() {
		p := filepath.Join("../..", f.path) // a host `go test` runs in this directory
		if os.Getenv("GENERATED_"+name) != "" {
			p = runfile.Path(t, "GENERATED_"+name)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if want := f.contents(); string(got) != string(want) {
			t.Errorf("%s is stale; regenerate it from the repository root with\n  GOFLAGS=-mod=mod go run ./build/genbzl %s > %s\nwant:\n%s", f.path, name, f.path, want)
		}
	}
}
