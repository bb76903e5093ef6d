// Command sum is the large test image's program: it reads the file its
// argument names to the end and prints "sha256 <hex>", so the E2E sees that
// every byte came back as the build wrote it.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: sum FILE")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "sum:", err)
		os.Exit(1)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sum: %s after %d bytes: %v\n", os.Args[1], n, err)
		os.Exit(1)
	}
	fmt.Printf("sha256 %s (%d bytes)\n", hex.EncodeToString(h.Sum(nil)), n)
}
