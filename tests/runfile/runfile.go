// Package runfile finds the files a Bazel test or `bazel run` target gets as
// data: each is named by an environment variable holding its rlocation path
// (set in BUILD with `env = {"X": "$(rlocationpath :target)"}` or in args).
// It must not search anywhere but the runfiles.
package runfile

import (
	"fmt"
	"os"
	"testing"

	"github.com/bazelbuild/rules_go/go/runfiles"
)

// Lookup resolves the rlocation path in the environment variable env.
func Lookup(env string) (string, error) {
	loc := os.Getenv(env)
	if loc == "" {
		return "", fmt.Errorf("$%s is not set: run with bazel, with the file in data and its $(rlocationpath) in env", env)
	}
	p, err := runfiles.Rlocation(loc)
	if err != nil {
		return "", fmt.Errorf("failed to find $%s (%s) in the runfiles: %w", env, loc, err)
	}
	return p, nil
}

// Path is Lookup for tests: it fails the test when the file is not there.
func Path(t testing.TB, env string) string {
	t.Helper()
	p, err := Lookup(env)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
