// Package bigdata makes the power-cut E2E's big file: seeded pseudo-random
// bytes (ChaCha8), the same for the same seed and size on every build, and
// incompressible, so the layer holding them is as big in the bundle as on
// disk and its ingest and unpack take long enough to cut the power in the
// middle. It must not read any source of true randomness.
package bigdata

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
)

// The file the power-cut E2E's big image carries.
const (
	Seed = 20260101
	Size = 128 << 20
	// Path is where it lies in the image.
	Path = "/data/big.bin"
)

// chunk is how much is generated and written at a time.
const chunk = 1 << 20

// Write writes size bytes generated from seed to w.
func Write(w io.Writer, seed uint64, size int64) error {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	src := rand.NewChaCha8(key)
	buf := make([]byte, chunk)
	for size > 0 {
		n := min(size, chunk)
		if _, err := src.Read(buf[:n]); err != nil {
			return fmt.Errorf("failed to generate data: %w", err)
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return fmt.Errorf("failed to write data: %w", err)
		}
		size -= n
	}
	return nil
}

// SHA256 is the hex sha256 of what Write writes for seed and size.
func SHA256(seed uint64, size int64) (string, error) {
	h := sha256.New()
	if err := Write(h, seed, size); err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}
