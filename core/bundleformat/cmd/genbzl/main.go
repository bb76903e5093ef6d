// Command genbzl prints build/oci/bundle_format.bzl, the Starlark copy of
// core/bundleformat's constants (see bundleformat.StarlarkCommand). It must
// not write anything but its standard output.
package main

import (
	"fmt"
	"os"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

func main() {
	if _, err := os.Stdout.Write(bundleformat.Starlark()); err != nil {
		fmt.Fprintf(os.Stderr, "failed to write: %v\n", err)
		os.Exit(1)
	}
}
