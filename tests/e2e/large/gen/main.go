// Command gen writes the large test image's data layer: an uncompressed
// layer tar holding /data/blob, -size bytes that no compressor can shrink
// (ChaCha8 from a fixed seed, so the same flags give the same bytes), and
// the blob's sha256 in hex, which the E2E wants the pod to print. It is a
// test tool: it must never be part of a shipped image.
package main

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"
)

// BlobPath is the blob's path in the image.
const BlobPath = "data/blob"

func run(size int64, out, sumOut string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	epoch := time.Unix(0, 0)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: BlobPath, Mode: 0o644, Size: size, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return err
	}
	h := sha256.New()
	// A fixed seed: the blob is test data, the same on every build.
	src := rand.NewChaCha8([32]byte{'a', 'p', 'p', 'l', 'i', 'a', 'n', 'c', 'e', ' ', 'l', 'a', 'r', 'g', 'e'})
	if _, err := io.CopyN(io.MultiWriter(tw, h), src, size); err != nil {
		return fmt.Errorf("failed to write the blob: %w", err)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.WriteFile(sumOut, []byte(hex.EncodeToString(h.Sum(nil))+"\n"), 0o644)
}

func main() {
	size := flag.Int64("size", 0, "the blob's size in bytes")
	out := flag.String("out", "", "the layer tar to write")
	sum := flag.String("sha256", "", "the file to write the blob's sha256 to")
	flag.Parse()
	if *size <= 0 || *out == "" || *sum == "" {
		fmt.Fprintln(os.Stderr, "usage: gen -size N -out layer.tar -sha256 blob.sha256")
		os.Exit(2)
	}
	if err := run(*size, *out, *sum); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
