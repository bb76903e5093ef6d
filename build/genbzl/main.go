// Command genbzl prints one of the Starlark files generated from Go
// contract packages, so that Starlark holds no copy of them:
//
//	genbzl bundle_format   build/oci/bundle_format.bzl (core/bundleformat)
//	genbzl node            build/appliance/node.bzl (core/node)
//
// TestGeneratedUpToDate fails when a checked-in file is stale. It must not
// write anything but its standard output.
package main

import (
	"fmt"
	"os"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/node"
)

// genFile is one generated file: its path in the repository and what it
// must hold.
type genFile struct {
	path     string
	contents func() []byte
}

// generated are the generated files, by name.
func generated() map[string]genFile {
	return map[string]genFile{
		"bundle_format": {"build/oci/bundle_format.bzl", bundleformat.Starlark},
		"node":          {"build/appliance/node.bzl", node.Starlark},
	}
}

func main() {
	files := generated()
	if len(os.Args) != 2 || files[os.Args[1]].contents == nil {
		fmt.Fprintln(os.Stderr, "usage: genbzl bundle_format|node")
		os.Exit(2)
	}
	if _, err := os.Stdout.Write(files[os.Args[1]].contents()); err != nil {
		fmt.Fprintf(os.Stderr, "failed to write: %v\n", err)
		os.Exit(1)
	}
}
