package launch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// DefaultDiskSize is the VM's disk: room for the data partition after the
// image's slots. Sparse, it costs only what the guest writes.
const DefaultDiskSize = 4 << 30

// prepareState makes state a sparse copy of image grown to size, unless it
// exists: then it is grown to size if smaller, and otherwise kept as it is
// (what an earlier boot left). The image is only read.
func prepareState(image, state string, size int64) error {
	if fi, err := os.Stat(state); err == nil {
		if fi.Size() < size {
			return growState(state, size)
		}
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("launch: state disk: %w", err)
	}
	src, err := os.Open(image)
	if err != nil {
		return fmt.Errorf("launch: disk image: %w", err)
	}
	defer src.Close()
	tmp := state + ".partial"
	dst, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("launch: state disk: %w", err)
	}
	n, err := CopySparse(dst, src)
	if err == nil {
		err = dst.Truncate(max(n, size))
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, state)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("launch: failed to copy %s to %s: %w", image, state, err)
	}
	return nil
}

func growState(state string, size int64) error {
	if err := os.Truncate(state, size); err != nil {
		return fmt.Errorf("launch: failed to grow %s: %w", state, err)
	}
	return nil
}

// CopySparse copies src to dst, leaving holes where src has blocks of
// zeros, and returns src's size.
func CopySparse(dst *os.File, src io.Reader) (int64, error) {
	const block = 1 << 20
	buf, zero := make([]byte, block), make([]byte, block)
	var off int64
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := dst.WriteAt(buf[:n], off); werr != nil {
				return off, werr
			}
		}
		off += int64(n)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return off, nil
		}
		if err != nil {
			return off, err
		}
	}
}
