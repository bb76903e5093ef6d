package bundleformat

import (
	"fmt"
	"strings"
)

// StarlarkCommand regenerates build/oci/bundle_format.bzl from this
// package (run from the repository root).
const StarlarkCommand = "GOFLAGS=-mod=mod go run ./build/genbzl bundle_format > build/oci/bundle_format.bzl"

// Starlark is build/oci/bundle_format.bzl: the format's constants the image
// rules need, generated from this package so Starlark holds no copy.
func Starlark() []byte {
	var b strings.Builder
	b.WriteString(`"""Preseed bundle format constants, generated from core/bundleformat: do not edit.

Regenerate with ` + "`" + StarlarkCommand + "`" + `.
"""

`)
	b.WriteString("# Each compression kind of a bundle and its file name extension.\n")
	b.WriteString("BUNDLE_EXTENSIONS = {\n")
	for _, k := range kinds() {
		fmt.Fprintf(&b, "    %q: %q,\n", k.c, k.ext)
	}
	b.WriteString("}\n\n")
	b.WriteString("# Where bundles live in the appliance: PRESEED_ROOT/<namespace>/<name><ext>.\n")
	fmt.Fprintf(&b, "PRESEED_ROOT = %q\n\n", PreseedRoot)
	b.WriteString("# Where the appliance carries the preseed manifest.\n")
	fmt.Fprintf(&b, "PRESEED_MANIFEST_PATH = %q\n", ManifestPath)
	return []byte(b.String())
}
