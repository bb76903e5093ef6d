// Command tamper changes a built appliance disk "at rest", for the E2E's
// fault cases: it flips bytes inside the system partition (slot A) without
// touching its hash tree or the UKI's root hash, so that only dm-verity can
// notice, at read time.
//   - -flip-file PATH flips a byte of the ELF header of the system's file
//     PATH (a program: its exec then reads a refused block);
//   - -flip-layer NAME flips a byte of the first ELF header on a block
//     boundary in the top cached layer blob of the bundle NAME (its
//     program).
//
// Every other byte is copied unchanged. It is a test tool: it must never be
// part of a shipped image.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"
	erofs "github.com/erofs/go-erofs"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/disklayout"
	"github.com/appliance-bundler/appliance/core/erofsmap"
	"github.com/appliance-bundler/appliance/core/systemimage"
)

// elfFlip is the offset in an ELF header of the byte flipped (in
// e_phoff: the header still says ELF, the program headers move).
const elfFlip = 0x20

// slotA is the byte range of the disk's system-a partition.
func slotA(disk *os.File) (*io.SectionReader, error) {
	table, err := gpt.Read(disk, disklayout.SectorSize, disklayout.SectorSize)
	if err != nil {
		return nil, fmt.Errorf("failed to read the GPT of %s: %w", disk.Name(), err)
	}
	for _, p := range table.Partitions {
		if p.Name == disklayout.SystemA {
			start, end := int64(p.Start)*disklayout.SectorSize, int64(p.End+1)*disklayout.SectorSize
			return io.NewSectionReader(disk, start, end-start), nil
		}
	}
	return nil, fmt.Errorf("%s has no partition %s", disk.Name(), disklayout.SystemA)
}

// fileStart is the system's byte where the data of file starts, and the
// size of its first run (mkfs.erofs lays out an uncompressed file in one
// run of blocks, but for a tail it may keep inline).
func fileStart(sys fs.FS, file string) (int64, int64, error) {
	rs, err := erofsmap.Ranges(sys, strings.TrimPrefix(file, "/"))
	if err != nil {
		return 0, 0, err
	}
	if len(rs) == 0 || rs[0].FileOffset != 0 {
		return 0, 0, fmt.Errorf("%s has no data at its start", file)
	}
	return rs[0].Offset, rs[0].Size, nil
}

// firstELF is the offset of the first ELF header on a block boundary of the
// uncompressed EROFS image in r (file data starts on a block).
func firstELF(r io.ReaderAt, size int64) (int64, error) {
	head := make([]byte, 4)
	for off := int64(0); off+systemimage.BlockSize <= size; off += systemimage.BlockSize {
		if _, err := r.ReadAt(head, off); err != nil {
			return 0, err
		}
		if bytes.Equal(head, []byte("\x7fELF")) {
			return off, nil
		}
	}
	return 0, errors.New("no ELF header on a block boundary")
}

// topLayerPath is the path in the system of the top cached layer of the
// bundle named name in the manifest.
func topLayerPath(manifest, name string) (string, error) {
	b, err := os.ReadFile(manifest)
	if err != nil {
		return "", err
	}
	m, err := bundleformat.ParseManifest(b)
	if err != nil {
		return "", fmt.Errorf("manifest %s: %w", manifest, err)
	}
	for _, e := range m.Bundles {
		if e.Name == name && len(e.CachedLayers) > 0 {
			return e.CachedLayers[len(e.CachedLayers)-1].Path, nil
		}
	}
	return "", fmt.Errorf("manifest %s has no bundle %s with cached layers", manifest, name)
}

// targets are the disk's bytes to flip: an ELF header's byte in each file
// of files, and in the blob at layer.
func targets(disk *os.File, files []string, layer string) ([]int64, error) {
	part, err := slotA(disk)
	if err != nil {
		return nil, err
	}
	_, partStart, _ := part.Outer()
	sys, err := erofs.Open(part)
	if err != nil {
		return nil, fmt.Errorf("slot A of %s holds no EROFS: %w", disk.Name(), err)
	}
	var out []int64
	for _, f := range files {
		start, _, err := fileStart(sys, f)
		if err != nil {
			return nil, err
		}
		out = append(out, partStart+start+elfFlip)
	}
	if layer != "" {
		start, size, err := fileStart(sys, layer)
		if err != nil {
			return nil, err
		}
		elf, err := firstELF(io.NewSectionReader(part, start, size), size)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", layer, err)
		}
		out = append(out, partStart+start+elf+elfFlip)
	}
	return out, nil
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func run(in, out, manifest, layerBundle string, files []string) error {
	src, err := os.Open(in)
	if err != nil {
		return err
	}
	defer src.Close()
	layer := ""
	if layerBundle != "" {
		if layer, err = topLayerPath(manifest, layerBundle); err != nil {
			return err
		}
	}
	flips, err := targets(src, files, layer)
	if err != nil {
		return err
	}
	dst, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer dst.Close()
	// io.Copy between files uses copy_file_range: the copy keeps holes.
	if _, err := io.Copy(dst, src); err != nil {
		return fmt.Errorf("failed to copy %s to %s: %w", in, out, err)
	}
	b := make([]byte, 1)
	for _, off := range flips {
		if _, err := dst.ReadAt(b, off); err != nil {
			return err
		}
		b[0] ^= 0xff
		if _, err := dst.WriteAt(b, off); err != nil {
			return err
		}
	}
	return dst.Close()
}

func main() {
	in := flag.String("in", "", "the appliance disk image")
	out := flag.String("out", "", "the tampered disk image to write")
	manifest := flag.String("manifest", "", "the preseed manifest of the disk's tree (for -flip-layer)")
	layer := flag.String("flip-layer", "", "bundle name: flip a byte of the first ELF header in its top cached layer")
	var files stringList
	flag.Var(&files, "flip-file", "a file of the system: flip a byte of its ELF header (repeatable)")
	flag.Parse()
	if err := run(*in, *out, *manifest, *layer, files); err != nil {
		fmt.Fprintln(os.Stderr, "tamper:", err)
		os.Exit(1)
	}
}
