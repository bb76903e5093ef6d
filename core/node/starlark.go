package node

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// StarlarkCommand regenerates build/appliance/node.bzl from this package
// (run from the repository root).
const StarlarkCommand = "GOFLAGS=-mod=mod go run ./build/genbzl node > build/appliance/node.bzl"

// Starlark is build/appliance/node.bzl: the settings the build's rules
// need, generated from this package so Starlark holds no copy.
func Starlark() []byte {
	var b strings.Builder
	b.WriteString(`"""Node settings, generated from core/node: do not edit.

Regenerate with ` + "`" + StarlarkCommand + "`" + `.
"""

`)
	b.WriteString("# The kubelet's staticPodPath: where the appliance carries the static pods.\n")
	fmt.Fprintf(&b, "STATIC_POD_DIR = %q\n", StaticPodDir)
	b.WriteString("\n# /etc's links to the files the node writes at boot, on tmpfs (the root may be\n# read-only): each path to its target.\nETC_LINKS = {\n")
	links := EtcLinks()
	for _, p := range slices.Sorted(maps.Keys(links)) {
		fmt.Fprintf(&b, "    %q: %q,\n", p, links[p])
	}
	b.WriteString("}\n")
	return []byte(b.String())
}
