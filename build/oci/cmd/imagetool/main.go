// Command imagetool is the build tool behind build/oci's image rules
// (layer_tar, oci_image, oci_image_index, oci_from_tarball): it writes layer
// tars, image layouts and index layouts, and takes images from tarballs.
// Each subcommand reads only the paths it is given, never the network. It
// must not hold logic of its own beyond argument handling: that lives in
// the packages it calls. It links no containerd and no registry client, so
// an edit to those reruns none of its actions.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/appliance-bundler/appliance/build/oci/cmd/internal/cli"
	"github.com/appliance-bundler/appliance/build/oci/imagebuild"
)

const usage = `usage: imagetool <command> [flags]
commands:
  layer   --spec FILE --out TAR                 files → deterministic layer tar
  image   --spec FILE --out DIR [--digest FILE]  image spec → OCI layout
  index   --image DIR... [--target LABEL] --out DIR [--digest FILE]  layouts → index layout
  tarball --tarball FILE [--image SELECTOR] --out DIR [--digest FILE]  image tarball → OCI layout`

func main() { cli.Main("imagetool", usage, run) }

func run(ctx context.Context, cmd string, args []string) error {
	switch cmd {
	case "layer":
		return runLayer(args)
	case "image":
		return runImage(args)
	case "index":
		return runIndex(ctx, args)
	case "tarball":
		return runTarball(ctx, args)
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

// runLayer is "imagetool layer": the files of a spec → a layer tar.
func runLayer(args []string) error {
	fs := flag.NewFlagSet("layer", flag.ContinueOnError)
	spec := fs.String("spec", "", "JSON spec file")
	out := fs.String("out", "", "output path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var s struct {
		Files []imagebuild.LayerFile `json:"files"`
	}
	if err := cli.ReadJSON(*spec, &s); err != nil {
		return err
	}
	return cli.WriteFile(*out, func(f *os.File) error { return imagebuild.WriteLayer(f, s.Files) })
}

// runImage is "imagetool image": an image spec → an OCI layout.
func runImage(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	spec := fs.String("spec", "", "JSON spec file")
	out := fs.String("out", "", "output layout directory")
	digestOut := fs.String("digest", "", "file to write the manifest digest to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var s imagebuild.Spec
	if err := cli.ReadJSON(*spec, &s); err != nil {
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
	return cli.WriteDigest(*digestOut, dg.String())
}
