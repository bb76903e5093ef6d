// Command mkdisk writes the appliance's disk image (build/appliance/disk)
// and its layout as JSON. SOURCE_DATE_EPOCH must be set: it is every time
// stamp of the ESP.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/appliance-bundler/appliance/build/appliance/disk"
	"github.com/appliance-bundler/appliance/build/appliance/uki"
	"github.com/appliance-bundler/appliance/core/systemimage"
)

func main() {
	var spec disk.Spec
	var out, layoutOut, infoFile string
	flag.StringVar(&spec.UKI, "uki", "", "the Unified Kernel Image: its os-release's IMAGE_VERSION names its boot entry")
	flag.StringVar(&spec.Loader, "loader", "", "systemd-boot (systemd-bootx64.efi)")
	flag.StringVar(&spec.System, "system", "", "the system image for slot A")
	flag.StringVar(&infoFile, "system-info", "", "the system image's info (JSON, from mksystem)")
	flag.Int64Var(&spec.SystemSize, "system-size", 0, "size of each system slot in bytes (default: fits -system)")
	flag.Int64Var(&spec.ESPSize, "esp-size", 0, "size of the ESP in bytes (default: fits two UKIs)")
	flag.StringVar(&out, "out", "", "the disk image to write")
	flag.StringVar(&layoutOut, "layout", "", "where to write the layout (JSON)")
	flag.Parse()
	if err := run(spec, infoFile, out, layoutOut); err != nil {
		fmt.Fprintln(os.Stderr, "mkdisk:", err)
		os.Exit(1)
	}
}

func run(spec disk.Spec, infoFile, out, layoutOut string) error {
	if spec.UKI == "" || spec.Loader == "" || spec.System == "" || infoFile == "" || out == "" || layoutOut == "" {
		return fmt.Errorf("-uki, -loader, -system, -system-info, -out and -layout are required")
	}
	efi, err := os.ReadFile(spec.UKI)
	if err != nil {
		return err
	}
	if spec.Version, err = uki.Version(efi); err != nil {
		return fmt.Errorf("the UKI %s: %w", spec.UKI, err)
	}
	info, err := systemimage.ReadInfo(infoFile)
	if err != nil {
		return err
	}
	// The GUIDs follow the system.
	spec.SystemRootHash, spec.Seed = info.RootHash, info.RootHash
	layout, err := disk.Write(spec, out)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(layout, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(layoutOut, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", layoutOut, err)
	}
	return nil
}
