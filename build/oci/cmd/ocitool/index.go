package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/appliance-bundler/appliance/build/oci/imagebuild"
)

// runIndex is "ocitool index": the layouts of single images → a layout of
// one image index (oci_image_index).
func runIndex(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("index", flag.ContinueOnError)
	target := fs.String("target", "", "the rule's label, for errors")
	out := fs.String("out", "", "output layout directory")
	digestOut := fs.String("digest", "", "file to write the index digest to")
	var images listFlag
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
	if *digestOut != "" {
		if err := os.WriteFile(*digestOut, []byte(dg.String()+"\n"), 0o644); err != nil {
			return fmt.Errorf("failed to write %s: %w", *digestOut, err)
		}
	}
	return nil
}
