package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/appliance-bundler/appliance/build/oci/cmd/internal/cli"
	"github.com/appliance-bundler/appliance/build/oci/imagebuild"
)

// runIndex is "imagetool index": the layouts of single images → a layout of
// one image index (oci_image_index).
func runIndex(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("index", flag.ContinueOnError)
	target := fs.String("target", "", "the rule's label, for errors")
	out := fs.String("out", "", "output layout directory")
	digestOut := fs.String("digest", "", "file to write the index digest to")
	var images cli.ListFlag
	fs.Var(&images, "image", "OCI layout of one image, repeatable, in index order")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("no --out given")
	}
	dg, err := imagebuild.WriteIndex(*target, *out, images)
	if err != nil {
		return err
	}
	return cli.WriteDigest(*digestOut, dg.String())
}
