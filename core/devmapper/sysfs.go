package devmapper

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-bundler/appliance/core/erofscache"
)

// readAttr reads one sysfs attribute, without its trailing newline.
func readAttr(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("failed to read %s: %w", path, err)
	}
	return strings.TrimRight(string(b), "\n"), nil
}

// describeDM reads the dm device kernel (dm-N) from sysfs at sys.
func describeDM(sys, kernel string) (Device, error) {
	block := filepath.Join(sys, "block", kernel)
	d := Device{Kernel: kernel}
	var err error
	if d.Name, err = readAttr(filepath.Join(block, "dm", "name")); err != nil {
		return Device{}, err
	}
	if d.Dev, err = readAttr(filepath.Join(block, "dev")); err != nil {
		return Device{}, err
	}
	slaves, err := os.ReadDir(filepath.Join(block, "slaves"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return Device{}, fmt.Errorf("failed to list the slaves of %s: %w", kernel, err)
	}
	names := make([]string, 0, len(slaves))
	for _, s := range slaves {
		names = append(names, s.Name())
	}
	sort.Strings(names)
	for _, s := range names {
		if strings.HasPrefix(s, "loop") {
			return d, describeLoop(sys, s, &d)
		}
	}
	return d, nil
}

// describeLoop fills in d's loop device loop and the blob behind it.
func describeLoop(sys, loop string, d *Device) error {
	block := filepath.Join(sys, "block", loop)
	d.Loop = loop
	var err error
	if d.LoopDev, err = readAttr(filepath.Join(block, "dev")); err != nil {
		return err
	}
	// A loop device without a file has no loop/ directory.
	if d.BackingFile, err = readAttr(filepath.Join(block, "loop", "backing_file")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	d.DiffID = diffIDOf(d.BackingFile)
	return nil
}

// describeDev finds the dm device for dev (major:minor), which is either
// the dm device itself or the loop device under it, as the kernel's
// dm-verity messages name the data device.
func describeDev(sys, dev string) (Device, error) {
	link := filepath.Join(sys, "dev", "block", dev)
	target, err := os.Readlink(link)
	if err != nil {
		return Device{}, fmt.Errorf("no block device %s: %w", dev, err)
	}
	kernel := filepath.Base(target)
	if strings.HasPrefix(kernel, "dm-") {
		return describeDM(sys, kernel)
	}
	// Through /sys/dev/block: a partition (the system slot under its
	// dm-verity device) has no /sys/block entry of its own.
	holders, err := os.ReadDir(filepath.Join(link, "holders"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return Device{}, fmt.Errorf("failed to list the holders of %s: %w", kernel, err)
	}
	for _, h := range holders {
		if strings.HasPrefix(h.Name(), "dm-") {
			return describeDM(sys, h.Name())
		}
	}
	// A loop device that no dm device holds (any more): still name its blob.
	d := Device{}
	if strings.HasPrefix(kernel, "loop") {
		return d, describeLoop(sys, kernel, &d)
	}
	return Device{}, fmt.Errorf("block device %s (%s) is neither a dm device nor under one", dev, kernel)
}

// diffIDOf is the diffID of the layer whose cache blob is at blob, from the
// cache layout (erofscache.RelPath); empty when blob is not laid out so.
func diffIDOf(blob string) digest.Digest {
	hexName, ok := strings.CutSuffix(filepath.Base(blob), erofscache.BlobExt)
	if !ok {
		return ""
	}
	prefixDir := filepath.Dir(blob)
	algoDir := filepath.Dir(prefixDir)
	d := digest.NewDigestFromEncoded(digest.Algorithm(filepath.Base(algoDir)), hexName)
	if d.Validate() != nil || len(hexName) < 2 || filepath.Base(prefixDir) != hexName[:2] {
		return ""
	}
	return d
}
