// Command pulltool is the build tool behind build/oci's pull rules: it
// fetches pinned images into OCI layouts (oci_fetch) and updates the image
// lock file (oci_lock_update). It is the only tool of build/oci that uses
// the network. It must not hold logic of its own beyond argument handling:
// that lives in build/oci/pull.
package main

import (
	"context"
	"fmt"

	"github.com/appliance-bundler/appliance/build/oci/cmd/internal/cli"
)

const usage = `usage: pulltool <command> [flags]
commands:
  pull --image REPO --digest DIGEST [--platform os/arch]... [--mirror REPO]...
       [--docker-config FILE] --out DIR
  lock --lock FILE [--refresh NAME]...   resolve tags, rewrite the lock`

func main() { cli.Main("pulltool", usage, run) }

func run(ctx context.Context, cmd string, args []string) error {
	switch cmd {
	case "pull":
		return runPull(ctx, args)
	case "lock":
		return runLock(ctx, args)
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}
