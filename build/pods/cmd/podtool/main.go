// Command podtool is the build tool behind the static_pod and static_pods
// rules (build/pods/*.bzl). `podtool pin` reads a pod manifest and the
// preseed bundles named in a JSON spec, and writes the pinned manifest and
// its info (staticpod.Info). `podtool tree` checks pinned pods against an
// appliance's preseed manifest and writes their tar and listing
// (staticpod.WriteTree). It reads only the paths it is given and must not
// hold logic of its own beyond argument handling: that lives in staticpod.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/appliance-bundler/appliance/build/pods/staticpod"
)

const usage = `usage: podtool pin --src POD.yaml --name POD --path PATH --spec SPEC.json --out OUT.yaml --info OUT.json [--strict_privileges]
SPEC.json: {"bundles": [{"file": PATH, "namespace": NS}, ...]}
       podtool tree --spec SPEC.json --preseed_manifest PRESEED.json --out PODS.tar --pods_json PODS.json
SPEC.json: {"pods": [{"name": POD, "file": PINNED.yaml}, ...]}`

// spec is what the rule passes besides paths of outputs.
type spec struct {
	Bundles []staticpod.Bundle `json:"bundles"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "podtool: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("no subcommand\n%s", usage)
	}
	switch args[0] {
	case "pin":
		return runPin(args[1:])
	case "tree":
		return runTree(args[1:])
	}
	return fmt.Errorf("unknown subcommand %q\n%s", args[0], usage)
}

func runPin(args []string) error {
	fs := flag.NewFlagSet("podtool pin", flag.ContinueOnError)
	src := fs.String("src", "", "pod manifest (YAML)")
	name := fs.String("name", "", "the pod's metadata.name, as the rule knows it")
	path := fs.String("path", "", "where the rule places the pod in the appliance")
	specFile := fs.String("spec", "", "JSON spec naming the bundles")
	out := fs.String("out", "", "pinned pod manifest to write")
	infoOut := fs.String("info", "", "pod info JSON to write")
	strict := fs.Bool("strict_privileges", false, "fail on privileges the pod gives no reason for, instead of warning")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *src == "" || *name == "" || *path == "" || *specFile == "" || *out == "" || *infoOut == "" || fs.NArg() != 0 {
		return fmt.Errorf("missing or extra arguments\n%s", usage)
	}
	s, err := readSpec(*specFile)
	if err != nil {
		return err
	}
	pod, info, err := staticpod.Build(*src, *name, s.Bundles, staticpod.Options{
		StrictPrivileges: *strict,
		Warn:             func(err error) { fmt.Fprintf(os.Stderr, "WARNING: %v\n", err) },
	})
	if err != nil {
		return err
	}
	// The rule states the path (it must be known before the build runs);
	// the kubelet's directory is staticpod's, and the two must agree.
	if info.Path != *path {
		return fmt.Errorf("pod manifest %s: the rule places pod %q at %s, but the kubelet reads it from %s", *src, *name, *path, info.Path)
	}
	infoJSON, err := info.JSON()
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, pod, 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", *out, err)
	}
	if err := os.WriteFile(*infoOut, infoJSON, 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", *infoOut, err)
	}
	return nil
}

func readSpec(file string) (*spec, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("failed to read spec: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("failed to parse spec %s: %w", file, err)
	}
	return &s, nil
}
