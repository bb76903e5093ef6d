package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/containerd/log"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/erofs"
)

// runTree places bundles in a preseed tree tar, converting the layers of
// those with erofs_cache into the tree's EROFS layer content cache.
func runTree(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tree", flag.ContinueOnError)
	spec := fs.String("spec", "", "JSON spec file")
	out := fs.String("out", "", "output tar")
	manifest := fs.String("manifest", "", "JSON manifest output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var s struct {
		Bundles []bundle.TreeInput `json:"bundles"`
	}
	if err := readJSON(*spec, &s); err != nil {
		return err
	}
	// containerd's content store warns, for every layer, that the build
	// machine's file system has no fs-verity; it is not used here.
	if err := log.SetLevel("error"); err != nil {
		return fmt.Errorf("failed to quiet containerd's log: %w", err)
	}
	dir, err := os.MkdirTemp("", "erofs-cache-")
	if err != nil {
		return fmt.Errorf("failed to create the EROFS cache work directory: %w", err)
	}
	defer os.RemoveAll(dir)
	var m []byte
	err = writeFile(*out, func(f *os.File) error {
		var err error
		m, err = bundle.WriteTreeCached(ctx, f, s.Bundles, erofs.TreeCache(dir))
		return err
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(*manifest, m, 0o644); err != nil {
		return fmt.Errorf("failed to write the preseed manifest: %w", err)
	}
	return nil
}
