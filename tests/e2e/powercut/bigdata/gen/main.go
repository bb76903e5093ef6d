// Command gen writes the power-cut E2E's big file (package bigdata) for a
// genrule. It must stay deterministic: no clock, no true randomness.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"

	"github.com/appliance-bundler/appliance/tests/e2e/powercut/bigdata"
)

func main() {
	out := flag.String("out", "", "file to write")
	seed := flag.Uint64("seed", bigdata.Seed, "generator seed")
	size := flag.Int64("size", bigdata.Size, "bytes to write")
	flag.Parse()
	if err := write(*out, *seed, *size); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func write(path string, seed uint64, size int64) error {
	if path == "" {
		return fmt.Errorf("-out is required")
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", path, err)
	}
	w := bufio.NewWriter(f)
	if err := bigdata.Write(w, seed, size); err != nil {
		f.Close()
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("failed to close %s: %w", path, err)
	}
	return nil
}
