// Command bigcheck is the entrypoint of the power-cut E2E's big image: it
// hashes the image's big file and prints its size and sha256, so the test
// sees from the container's log that the layer was unpacked whole. It must
// stay static, free of cgo, and read nothing but that file.
package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	"github.com/appliance-bundler/appliance/tests/e2e/powercut/bigdata"
)

func main() {
	if err := check(); err != nil {
		fmt.Fprintln(os.Stderr, "bigcheck:", err)
		os.Exit(1)
	}
}

func check() error {
	f, err := os.Open(bigdata.Path)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", bigdata.Path, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", bigdata.Path, err)
	}
	fmt.Printf("%s: %d bytes, sha256 %x\n", bigdata.Path, n, h.Sum(nil))
	return nil
}
