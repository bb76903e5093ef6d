package updater

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/go-dmverity/pkg/verity"
	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/appliance-bundler/appliance/core/blockdev"
	"github.com/appliance-bundler/appliance/core/disklayout"
	"github.com/appliance-bundler/appliance/core/systemimage"
	"github.com/appliance-bundler/appliance/core/updatepayload"
)

// bootDisk is the disk the running system was booted from and its
// partitions: the ESP, the running slot and the other one.
type bootDisk struct {
	dev            string // /dev/vda
	esp            string // its ESP's node
	running, other slot
}

// slot is a system partition.
type slot struct {
	name  string // disklayout.SystemA or SystemB
	index int    // GPT index, the kernel's partition number
	dev   string
	size  int64
}

// findBootDisk finds the disk whose GPT holds the running system's
// partition (named by rootHash, core/systemimage), on the disks of
// sysBlock with nodes in devDir.
func findBootDisk(sysBlock, devDir, rootHash string) (bootDisk, error) {
	guid, err := systemimage.PartitionGUID(rootHash)
	if err != nil {
		return bootDisk{}, err
	}
	disks, err := blockdev.Disks(sysBlock)
	if err != nil {
		return bootDisk{}, err
	}
	for _, name := range disks {
		table := readGPT(filepath.Join(devDir, name))
		if table == nil {
			continue
		}
		if bd, ok := slotsOf(sysBlock, devDir, name, table, guid); ok {
			return bd, nil
		}
	}
	return bootDisk{}, fmt.Errorf("no disk in %s holds the running system's partition (GUID %s)", sysBlock, guid)
}

func readGPT(dev string) *gpt.Table {
	d, err := diskfs.Open(dev, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		return nil
	}
	t, _ := pt.(*gpt.Table)
	return t
}

// slotsOf reads the boot disk's partitions from table, if the partition
// with guid is one of its slots.
func slotsOf(sysBlock, devDir, disk string, table *gpt.Table, guid string) (bootDisk, bool) {
	bd := bootDisk{dev: filepath.Join(devDir, disk)}
	var slots []slot
	found := false
	for _, p := range table.Partitions {
		node := ""
		if n := blockdev.Partition(sysBlock, disk, p.Index); n != "" {
			node = filepath.Join(devDir, n)
		}
		switch {
		case strings.EqualFold(string(p.Type), disklayout.TypeESP):
			bd.esp = node
		case strings.EqualFold(string(p.Type), disklayout.TypeSystem):
			s := slot{name: p.Name, index: p.Index, dev: node, size: int64(p.End-p.Start+1) * disklayout.SectorSize}
			if strings.EqualFold(p.GUID, guid) {
				bd.running, found = s, true
			} else {
				slots = append(slots, s)
			}
		}
	}
	if !found || len(slots) != 1 || bd.esp == "" || slots[0].dev == "" {
		return bd, false
	}
	bd.other = slots[0]
	return bd, true
}

// refusal is an error of a payload's content: the same manifest is not
// tried again. Any other error (the source, the disk) is.
type refusal struct{ err error }

func (r refusal) Error() string { return r.err.Error() }
func (r refusal) Unwrap() error { return r.err }

func refuse(format string, a ...any) error { return refusal{fmt.Errorf(format, a...)} }

// writeSystem streams the payload's compressed system image from r into
// s, checking the compressed file's and the image's sha256 and sizes
// against m as it goes. It returns the bytes read and written. On a
// mismatch the slot holds garbage, which no boot entry names.
func writeSystem(s slot, m updatepayload.Manifest, r io.Reader) (read, written int64, err error) {
	if m.System.Size > s.size {
		return 0, 0, refuse("the system image is %d bytes, more than slot %s's %d", m.System.Size, s.name, s.size)
	}
	f, err := os.OpenFile(s.dev, os.O_WRONLY, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("failed to open slot %s (%s): %w", s.name, s.dev, err)
	}
	defer f.Close()
	zsum, isum := sha256.New(), sha256.New()
	src := &countingReader{r: io.TeeReader(io.LimitReader(r, m.System.Compressed.Size+1), zsum)}
	dst := &errWriter{w: io.MultiWriter(f, isum)}
	image, err := newDecoder(src)
	if err != nil {
		return 0, 0, err
	}
	defer image.Close()
	written, err = io.CopyBuffer(dst, io.LimitReader(image, m.System.Size+1), make([]byte, 1<<20))
	switch {
	case src.err != nil:
		return src.n, written, fmt.Errorf("failed to read %s from the source after %d bytes: %w", updatepayload.SystemFile, src.n, src.err)
	case dst.err != nil:
		return src.n, written, fmt.Errorf("failed to write slot %s after %d bytes: %w", s.name, written, dst.err)
	case err != nil:
		return src.n, written, refuse("%s does not match the manifest: it does not decompress: %w", updatepayload.SystemFile, err)
	}
	// Drain what the decoder left, for the compressed file's hash.
	if _, err := io.Copy(io.Discard, src); err != nil {
		return src.n, written, fmt.Errorf("failed to read %s from the source: %w", updatepayload.SystemFile, err)
	}
	if err := f.Sync(); err != nil {
		return src.n, written, fmt.Errorf("failed to flush slot %s: %w", s.name, err)
	}
	if err := match(updatepayload.SystemFile, src.n, zsum.Sum(nil), m.System.Compressed); err != nil {
		return src.n, written, err
	}
	if err := match("the system image in it", written, isum.Sum(nil), updatepayload.File{Size: m.System.Size, SHA256: m.System.SHA256}); err != nil {
		return src.n, written, err
	}
	return src.n, written, nil
}

// match compares what was read with the manifest's size and sha256.
func match(what string, n int64, sum []byte, want updatepayload.File) error {
	if got := hex.EncodeToString(sum); n != want.Size || got != want.SHA256 {
		return refuse("%s does not match the manifest: %d bytes with sha256 %s, the manifest says %d bytes with sha256 %s", what, n, got, want.Size, want.SHA256)
	}
	return nil
}

// countingReader counts what it reads and keeps its error, but io.EOF.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		c.err = err
	}
	return n, err
}

// errWriter keeps its writer's error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// verifySlot reads the slot back and checks its hash tree against the
// manifest's root hash, as dm-verity will at boot: the bytes on the disk,
// not only those sent to it, are the system signed for.
func verifySlot(s slot, info systemimage.Info) error {
	root, err := hex.DecodeString(info.RootHash)
	if err != nil {
		return err
	}
	p := verity.DefaultParams()
	p.HashAreaOffset = info.HashOffset
	if err := verity.Verify(&p, s.dev, s.dev, root); err != nil {
		return refuse("slot %s does not verify against the root hash %s: %w", s.name, info.RootHash, err)
	}
	return nil
}

// setSlotGUID names slot s by the root hash of the system it now holds
// (core/systemimage.PartitionGUID): that system's UKI finds it by it.
func setSlotGUID(diskDev string, s slot, rootHash string) error {
	guid, err := systemimage.PartitionGUID(rootHash)
	if err != nil {
		return err
	}
	// Not exclusive: the running slot and the data partition are in use.
	b, err := file.OpenFromPathWithExclusive(diskDev, false, false)
	if err != nil {
		return fmt.Errorf("failed to open the boot disk %s: %w", diskDev, err)
	}
	d, err := diskfs.OpenBackend(b, diskfs.WithOpenMode(diskfs.ReadWrite))
	if err != nil {
		b.Close()
		return fmt.Errorf("failed to open the boot disk %s: %w", diskDev, err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		return fmt.Errorf("failed to read the partition table of %s: %w", diskDev, err)
	}
	table, ok := pt.(*gpt.Table)
	if !ok {
		return fmt.Errorf("the boot disk %s has no GPT", diskDev)
	}
	found := false
	for _, p := range table.Partitions {
		// go-diskfs leaves Size at 0 in what it reads, and would tell the
		// kernel every partition changed (see core/datapartition).
		p.Size = (p.End - p.Start + 1) * disklayout.SectorSize
		if p.Index == s.index {
			p.GUID, found = guid, true
		}
	}
	if !found {
		return fmt.Errorf("slot %s (partition %d) is not in the GPT of %s", s.name, s.index, diskDev)
	}
	if err := d.Partition(table); err != nil && !errors.Is(err, disk.ErrReReadDeferred) {
		return fmt.Errorf("failed to write the GPT of %s: %w", diskDev, err)
	}
	return nil
}
