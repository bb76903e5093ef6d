// Command genbzl prints one of the Starlark files generated from Go
// contract packages, so that Starlark holds no copy of them:
//
//	genbzl bundle_format   build/oci/bundle_format.bzl (core/bundleformat)
//	genbzl node            build/appliance/node.bzl (core/node)
//
// Each package's test fails when its checked-in file is stale. It must not
// write anything but its standard output.
package main

import (
	"fmt"
	"os"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/node"
)

func main() {
	files := map[string]func() []byte{
		"bundle_format": bundleformat.Starlark,
		"node":          node.Starlark,
	}
	if len(os.Args) != 2 || files[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: genbzl bundle_format|node")
		os.Exit(2)
	}
	if _, err := os.Stdout.Write(files[os.Args[1]]()); err != nil {
		fmt.Fprintf(os.Stderr, "failed to write: %v\n", err)
		os.Exit(1)
	}
}
