// Command bundletool is the build tool behind build/oci's preseed rules
// (preseed_bundle, preseed_tree): it writes preseed bundles and bundle
// trees, whose layers it converts to EROFS with the pinned mkfs.erofs. Each
// subcommand reads only the paths it is given, never the network. It must
// not hold logic of its own beyond argument handling: that lives in the
// packages it calls.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/cmd/internal/cli"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

const usage = `usage: bundletool <command> [flags]
commands:
  bundle --layout DIR --ref REF [--compression zstd|gzip] [--platform os/arch]... --out FILE
  tree   --spec FILE --out TAR --manifest JSON --mkfs_erofs BIN --mkfs_loader LD --mkfs_lib SONAME=FILE...
                                          bundles → preseed tree (layers converted by that mkfs.erofs)`

func main() { cli.Main("bundletool", usage, run) }

func run(ctx context.Context, cmd string, args []string) error {
	switch cmd {
	case "bundle":
		return runBundle(args)
	case "tree":
		return runTree(ctx, args)
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

// runBundle is "bundletool bundle": an OCI layout → one preseed bundle.
func runBundle(args []string) error {
	fs := flag.NewFlagSet("bundle", flag.ContinueOnError)
	layoutDir := fs.String("layout", "", "OCI layout directory")
	ref := fs.String("ref", "", "image reference")
	comp := fs.String("compression", "", `"", "gzip" or "zstd"`)
	out := fs.String("out", "", "output path")
	var plats cli.ListFlag
	fs.Var(&plats, "platform", "os/arch[/variant] to keep from an index, repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := bundleformat.ParseCompression(*comp)
	if err != nil {
		return err
	}
	return cli.WriteFile(*out, func(f *os.File) error { return bundle.Write(f, *layoutDir, *ref, c, plats...) })
}
