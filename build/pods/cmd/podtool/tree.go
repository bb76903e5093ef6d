package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/appliance-bundler/appliance/build/pods/staticpod"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// treeSpec is what the static_pods rule passes besides paths.
type treeSpec struct {
	Pods []staticpod.TreePod `json:"pods"`
}

// runTree writes the pods tar and listing only when every pod passes: a
// failed check leaves no output, so the build fails.
func runTree(args []string) error {
	fs := flag.NewFlagSet("podtool tree", flag.ContinueOnError)
	specFile := fs.String("spec", "", "JSON spec naming the pinned pods")
	manifest := fs.String("preseed_manifest", "", "the appliance's preseed manifest")
	out := fs.String("out", "", "tar of etc/kubernetes/manifests to write")
	podsJSON := fs.String("pods_json", "", "pods listing (JSON) to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *specFile == "" || *manifest == "" || *out == "" || *podsJSON == "" || fs.NArg() != 0 {
		return fmt.Errorf("missing or extra arguments\n%s", usage)
	}
	data, err := os.ReadFile(*specFile)
	if err != nil {
		return fmt.Errorf("failed to read spec: %w", err)
	}
	var s treeSpec
	if err := bundleformat.DecodeStrict(data, &s); err != nil {
		return fmt.Errorf("failed to parse spec %s: %w", *specFile, err)
	}
	tmp := *out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", tmp, err)
	}
	bw := bufio.NewWriter(f)
	listing, err := staticpod.WriteTree(bw, s.Pods, *manifest)
	if err == nil {
		err = bw.Flush()
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	if err := os.WriteFile(*podsJSON, listing, 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", *podsJSON, err)
	}
	if err := os.Rename(tmp, *out); err != nil {
		return fmt.Errorf("failed to write %s: %w", *out, err)
	}
	return nil
}
