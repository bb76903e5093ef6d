package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/appliance-bundler/appliance/build/oci/cmd/internal/cli"
	"github.com/appliance-bundler/appliance/build/oci/tarball"
)

// runTarball is "imagetool tarball --tarball FILE [--image SELECTOR] --out DIR
// [--digest FILE]": one image of an image tarball → OCI layout.
func runTarball(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tarball", flag.ContinueOnError)
	in := fs.String("tarball", "", "image tarball: docker save or OCI layout; plain, gzip or zstd")
	image := fs.String("image", "", "RepoTag, image name or sha256 digest of the image to take")
	out := fs.String("out", "", "OCI layout directory to write")
	digestOut := fs.String("digest", "", "file to write the image's digest to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" || *out == "" {
		return fmt.Errorf("--tarball and --out are required")
	}
	res, err := tarball.Load(ctx, *in, *image, *out)
	if err != nil {
		return err
	}
	return cli.WriteDigest(*digestOut, res.Digest.String())
}
