// Command ocitool is the build tool behind build/oci's Bazel rules: it writes
// layer tars, images, preseed bundles and bundle trees, fetches pinned images
// and updates the image lock file. Each subcommand reads only the paths it is
// given; only "pull" and "lock" use the network. It must not hold logic of
// its own beyond argument handling: that lives in the packages it calls.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/imagebuild"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

const usage = `usage: ocitool <command> [flags]
commands:
  layer  --spec FILE --out TAR            files → deterministic layer tar
  image  --spec FILE --out DIR [--digest FILE]  image spec → OCI layout
  bundle --layout DIR --ref REF [--compression zstd|gzip] [--platform os/arch]... --out FILE
  tree   --spec FILE --out TAR --manifest JSON --mkfs_erofs BIN --mkfs_loader LD --mkfs_lib SONAME=FILE...
                                          bundles → preseed tree (layers converted by that mkfs.erofs)
  index  --image DIR... [--target LABEL] --out DIR [--digest FILE]  layouts → index layout
  tarball --tarball FILE [--image SELECTOR] --out DIR [--digest FILE]  image tarball → OCI layout
  pull   --image REPO --digest DIGEST [--platform os/arch]... [--mirror REPO]...
         [--docker-config FILE] --out DIR
  lock   --lock FILE [--refresh NAME]...   resolve tags, rewrite the lock`

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err := run(ctx, os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "ocitool %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cmd string, args []string) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	spec := fs.String("spec", "", "JSON spec file")
	out := fs.String("out", "", "output path")
	switch cmd {
	case "index":
		return runIndex(ctx, args)
	case "layer":
		if err := fs.Parse(args); err != nil {
			return err
		}
		var s struct {
			Files []imagebuild.LayerFile `json:"files"`
		}
		if err := readJSON(*spec, &s); err != nil {
			return err
		}
		return writeFile(*out, func(f *os.File) error { return imagebuild.WriteLayer(f, s.Files) })
	case "image":
		digestOut := fs.String("digest", "", "file to write the manifest digest to")
		if err := fs.Parse(args); err != nil {
			return err
		}
		var s imagebuild.Spec
		if err := readJSON(*spec, &s); err != nil {
			return err
		}
		img, err := imagebuild.Build(s)
		if err != nil {
			return err
		}
		dg, err := imagebuild.WriteLayout(*out, img)
		if err != nil {
			return err
		}
		if *digestOut != "" {
			return os.WriteFile(*digestOut, []byte(dg.String()+"\n"), 0o644)
		}
		return nil
	case "bundle":
		layoutDir := fs.String("layout", "", "OCI layout directory")
		ref := fs.String("ref", "", "image reference")
		comp := fs.String("compression", "", `"", "gzip" or "zstd"`)
		var plats listFlag
		fs.Var(&plats, "platform", "os/arch[/variant] to keep from an index, repeatable")
		if err := fs.Parse(args); err != nil {
			return err
		}
		c, err := bundleformat.ParseCompression(*comp)
		if err != nil {
			return err
		}
		return writeFile(*out, func(f *os.File) error { return bundle.Write(f, *layoutDir, *ref, c, plats...) })
	case "tree":
		return runTree(ctx, args)
	case "pull":
		return runPull(ctx, args)
	case "tarball":
		return runTarball(ctx, args)
	case "lock":
		return runLock(ctx, args)
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("failed to read spec %s: %w", path, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("failed to parse spec %s: %w", path, err)
	}
	return nil
}

// writeFile creates path and runs write on it, removing it on failure so
// that no partial output is left.
func writeFile(path string, write func(*os.File) error) error {
	if path == "" {
		return fmt.Errorf("no --out given")
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", path, err)
	}
	if err := write(f); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}
