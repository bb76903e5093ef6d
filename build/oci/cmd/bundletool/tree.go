package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/containerd/log"

	"github.com/appliance-bundler/appliance/build/erofsmkfs"
	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/cmd/internal/cli"
	"github.com/appliance-bundler/appliance/build/oci/erofs"
)

// runTree places bundles in a preseed tree tar, converting the layers of
// those with erofs_cache into the tree's EROFS layer content cache.
func runTree(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tree", flag.ContinueOnError)
	spec := fs.String("spec", "", "JSON spec file")
	out := fs.String("out", "", "output tar")
	manifest := fs.String("manifest", "", "JSON manifest output")
	pinned := erofsmkfs.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The layers are converted by the pinned mkfs.erofs only.
	mkfs, err := pinned()
	if err != nil {
		return err
	}
	var s struct {
		Bundles []bundle.TreeInput `json:"bundles"`
	}
	if err := cli.ReadJSON(*spec, &s); err != nil {
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
	toolDir, err := os.MkdirTemp("", "mkfs-erofs-")
	if err != nil {
		return fmt.Errorf("failed to create the mkfs.erofs directory: %w", err)
	}
	defer os.RemoveAll(toolDir)
	bin, err := mkfs.Install(toolDir)
	if err != nil {
		return fmt.Errorf("failed to set up the pinned mkfs.erofs: %w", err)
	}
	// containerd's converter runs "mkfs.erofs" from PATH: only the pinned
	// one is on it (the action's environment has no PATH of its own).
	if err := os.Setenv("PATH", bin); err != nil {
		return err
	}
	var m []byte
	err = cli.WriteFile(*out, func(f *os.File) error {
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
