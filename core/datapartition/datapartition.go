// Package datapartition makes and finds the appliance's data partition
// (core/disklayout's "data"): at first boot it adds the partition over the
// rest of the boot disk, after the system slots, has the kernel add its
// device, and formats it at its full size with the shipped mke2fs; later
// boots find it, already formatted, and never format it again. The node's
// state (containerd's, the kubelet's, the machine ID) lives on it.
//
// A power cut at any point is safe: go-diskfs writes the backup GPT before
// the primary (and reads the backup when the primary is torn), and a
// partition without an ext4 superblock (mke2fs writes it last) is one
// whose formatting never finished, so it is formatted again.
//
// It must not mount the partition (init does), nor change any other
// partition, nor format a partition that holds an ext4 file system.
package datapartition

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"go.uber.org/zap"

	"github.com/appliance-bundler/appliance/core/blockdev"
	"github.com/appliance-bundler/appliance/core/disklayout"
)

const (
	// MinSize is the smallest data partition: containerd's metadata, the
	// images that are not in the system image, and the pods' writable
	// layers and logs must fit.
	MinSize = 256 << 20
	// deviceWait bounds how long the kernel may take to make the device
	// of a partition it was told about.
	deviceWait = 10 * time.Second
	// Label is the ext4 volume label.
	Label = "data"
)

// Config says where the data partition goes and how to format it.
type Config struct {
	// Disk is the boot disk's device, e.g. /dev/vda.
	Disk string
	// SysBlock and Dev are where sysfs's block directory and devtmpfs are
	// (/sys/block and /dev).
	SysBlock, Dev string
	// Mke2fs is the mke2fs binary the image ships.
	Mke2fs string
}

// Ensure returns the device of the data partition on cfg.Disk, adding and
// formatting it first if need be.
func Ensure(ctx context.Context, logger *zap.Logger, cfg Config) (string, error) {
	n, added, reread, err := ensurePartition(cfg.Disk)
	if err != nil {
		return "", err
	}
	if added {
		logger.Info("data partition added", zap.String("disk", cfg.Disk), zap.Int("partition", n), zap.NamedError("kernel_reread", reread))
	}
	dev, err := waitDevice(ctx, cfg, n)
	if err != nil {
		if reread != nil {
			err = fmt.Errorf("%w (telling the kernel of the new table: %w)", err, reread)
		}
		return "", err
	}
	ok, err := hasExt4(dev)
	if err != nil || ok {
		return dev, err
	}
	start := time.Now()
	if err := format(ctx, cfg.Mke2fs, dev); err != nil {
		return "", err
	}
	logger.Info("data partition formatted", zap.String("device", dev), zap.Duration("took", time.Since(start)))
	return dev, nil
}

// ensurePartition finds the data partition in the disk's GPT, or adds it
// over the free space after the last partition. It returns its number,
// whether it was added, and, when the kernel could not be told of the new
// table, why.
func ensurePartition(dev string) (n int, added bool, reread, err error) {
	// Not exclusive: the system slot on it is open (dm-verity holds it).
	// A backend that knows its path: go-diskfs tells the kernel of the new
	// partition through it (BLKPG; the re-read the whole table needs is
	// refused while a partition is busy).
	b, err := file.OpenFromPathWithExclusive(dev, false, false)
	if err != nil {
		return 0, false, nil, fmt.Errorf("failed to open the boot disk %s: %w", dev, err)
	}
	d, err := diskfs.OpenBackend(b, diskfs.WithOpenMode(diskfs.ReadWrite))
	if err != nil {
		b.Close()
		return 0, false, nil, fmt.Errorf("failed to open the boot disk %s: %w", dev, err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		return 0, false, nil, fmt.Errorf("failed to read the partition table of %s: %w", dev, err)
	}
	table, ok := pt.(*gpt.Table)
	if !ok {
		return 0, false, nil, fmt.Errorf("the boot disk %s has no GPT", dev)
	}
	if p := find(table); p != nil {
		return p.Index, false, nil, nil
	}
	p, err := plan(table, d.Size)
	if err != nil {
		return 0, false, nil, fmt.Errorf("the boot disk %s: %w", dev, err)
	}
	// go-diskfs leaves Size at 0 in the partitions it reads, and compares
	// it with the kernel's when it tells the kernel of the new table
	// (BLKPG): every partition would seem changed, and the busy system slot
	// cannot be removed, so the new one would not be added either.
	for _, q := range table.Partitions {
		q.Size = (q.End - q.Start + 1) * disklayout.SectorSize
	}
	// The GPT's backup header moves to the end of the disk, which may be
	// larger than the image was.
	table.Resize(uint64(d.Size))
	table.Partitions = append(table.Partitions, p)
	if err := d.Partition(table); err != nil {
		if !errors.Is(err, disk.ErrReReadDeferred) {
			return 0, false, nil, fmt.Errorf("failed to add the data partition to %s: %w", dev, err)
		}
		reread = err
	}
	return p.Index, true, reread, nil
}

// find is the data partition of table, or nil.
func find(table *gpt.Table) *gpt.Partition {
	for _, p := range table.Partitions {
		if p.Name == disklayout.Data && strings.EqualFold(string(p.Type), disklayout.TypeData) {
			return p
		}
	}
	return nil
}

// plan is the data partition over the free space of a disk of size bytes
// after table's partitions, aligned to disklayout.Alignment, or an error
// naming the sizes when that is less than MinSize.
func plan(table *gpt.Table, size int64) (*gpt.Partition, error) {
	const sector = disklayout.SectorSize
	var end uint64 // first free sector
	index := 0
	for _, p := range table.Partitions {
		end = max(end, p.End+1)
		index = max(index, p.Index)
	}
	start := uint64(disklayout.Align(int64(end) * sector))
	// The backup GPT's 33 sectors end the disk; the partition ends on an
	// aligned boundary before them.
	last := (size - 33*sector) / disklayout.Alignment * disklayout.Alignment
	free := last - int64(start)
	if free < MinSize {
		return nil, fmt.Errorf("disk too small for the data partition: %d bytes (%d MiB) after the system slots, which end at byte %d of %d; it needs at least %d (%d MiB)",
			max(free, 0), max(free, 0)>>20, start, size, int64(MinSize), MinSize>>20)
	}
	return &gpt.Partition{
		Index: index + 1,
		Start: start / sector,
		End:   uint64(last)/sector - 1,
		Size:  uint64(free),
		Type:  gpt.Type(disklayout.TypeData),
		Name:  disklayout.Data,
		GUID:  disklayout.GUID(table.GUID, disklayout.Data),
	}, nil
}

// waitDevice returns the device of partition n of cfg.Disk once the kernel
// has made it.
func waitDevice(ctx context.Context, cfg Config, n int) (string, error) {
	name := filepath.Base(cfg.Disk)
	ctx, cancel := context.WithTimeout(ctx, deviceWait)
	defer cancel()
	for {
		if part := blockdev.Partition(cfg.SysBlock, name, n); part != "" {
			dev := filepath.Join(cfg.Dev, part)
			if _, err := os.Stat(dev); err == nil {
				return dev, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("the kernel has no device for partition %d of %s after %s", n, cfg.Disk, deviceWait)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ext4's superblock: at byte 1024, its magic at 56.
const (
	superblockOffset = 1024
	magicOffset      = 56
	ext4Magic        = 0xEF53
)

// hasExt4 tells whether dev holds an ext4 (or ext2/3) superblock.
func hasExt4(dev string) (bool, error) {
	f, err := os.Open(dev)
	if err != nil {
		return false, fmt.Errorf("failed to open the data partition %s: %w", dev, err)
	}
	defer f.Close()
	b := make([]byte, 2)
	if _, err := f.ReadAt(b, superblockOffset+magicOffset); err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("failed to read the data partition %s: %w", dev, err)
	}
	return binary.LittleEndian.Uint16(b) == ext4Magic, nil
}

// format makes an ext4 file system over the whole of dev. Inode tables and
// the journal are zeroed lazily by the kernel, so a large disk formats in
// seconds.
func format(ctx context.Context, mke2fs, dev string) error {
	args := []string{"-t", "ext4", "-q", "-L", Label, "-E", "lazy_itable_init=1,lazy_journal_init=1", dev}
	cmd := exec.CommandContext(ctx, mke2fs, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("failed to format the data partition %s (%s %s): %w: %s", dev, mke2fs, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
