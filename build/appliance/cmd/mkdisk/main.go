// Command mkdisk writes the appliance's disk image (build/appliance/disk)
// and its layout as JSON. SOURCE_DATE_EPOCH must be set: it is every time
// stamp of the ESP.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/appliance-bundler/appliance/build/appliance/disk"
	"github.com/appliance-bundler/appliance/core/systemimage"
)

func main() {
	var spec disk.Spec
	var out, layoutOut, infoFile string
	flag.StringVar(&spec.UKI, "uki", "", "the Unified Kernel Image")
	flag.StringVar(&spec.System, "system", "", "the system image for slot A (optional)")
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
	if spec.UKI == "" || out == "" || layoutOut == "" {
		return fmt.Errorf("-uki, -out and -layout are required")
	}
	if (spec.System == "") != (infoFile == "") {
		return fmt.Errorf("-system and -system-info go together")
	}
	if infoFile != "" {
		info, err := systemimage.ReadInfo(infoFile)
		if err != nil {
			return err
		}
		spec.SystemRootHash = info.RootHash
	}
	// The GUIDs follow the system when there is one, else the UKI.
	spec.Seed = spec.SystemRootHash
	if spec.Seed == "" {
		sum, err := fileSum(spec.UKI)
		if err != nil {
			return err
		}
		spec.Seed = sum
	}
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

func fileSum(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("failed to read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
