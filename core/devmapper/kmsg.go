package devmapper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/atomicfile"
	"github.com/appliance-bundler/appliance/core/supervisor"
)

// VerityLog is the runnable that follows the kernel log for dm-verity's
// corruption messages and logs each as an error naming the layer or, on
// the system partition, the file.
type VerityLog struct {
	Sys  string // sysfs; DefaultSys if empty
	Kmsg string // the kernel log device; DefaultKmsg if empty
	Dev  string // devtmpfs; DefaultDev if empty
	// System is the device-mapper name of the system partition's
	// dm-verity device (systemimage.DeviceName); empty when there is
	// none. A corrupted block on it is logged with the file of the
	// system that holds it (see systemFields).
	System string
	// Root is where the system is mounted; "/" if empty.
	Root string
	// Registry, if not nil, names the layer of a device gone from sysfs
	// (Links records them).
	Registry *Registry
	// Cursor, if set, is a file that keeps the sequence number of the
	// last corruption logged, so that a run after a restart (of the
	// runnable or of the supervisor process) reads the kernel log from
	// its oldest record again but does not report old corruptions as
	// new. It belongs on a tmpfs: the kernel's numbering starts again at
	// each boot.
	Cursor string
}

// DefaultKmsgCursor is the appliance's VerityLog.Cursor.
const DefaultKmsgCursor = "/run/devmapper/kmsg-cursor"

// readCursor is the sequence number the cursor file holds; -1 when there
// is none yet.
func readCursor(path string) (int64, error) {
	if path == "" {
		return -1, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return -1, nil
	}
	if err != nil {
		return -1, fmt.Errorf("failed to read the kernel log cursor: %w", err)
	}
	seq, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1, fmt.Errorf("kernel log cursor %s: %w", path, err)
	}
	return seq, nil
}

// writeCursor records seq as the last corruption logged.
func writeCursor(path string, seq uint64) error {
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("failed to create the directory of %s: %w", path, err)
	}
	return atomicfile.Write(path, []byte(strconv.FormatUint(seq, 10)+"\n"), 0o644)
}

// kmsgRecord is one /dev/kmsg record: "prio,seq,usec,flags;message".
type kmsgRecord struct {
	Priority int // facility*8 + level
	Seq      uint64
	Message  string
}

// parseKmsg parses one record as read from /dev/kmsg (one per read). The
// lines after the first, " KEY=value" metadata, are dropped.
func parseKmsg(rec []byte) (kmsgRecord, error) {
	header, msg, ok := strings.Cut(string(rec), ";")
	if !ok {
		return kmsgRecord{}, fmt.Errorf("kmsg record %q has no ';'", rec)
	}
	f := strings.Split(header, ",")
	if len(f) < 4 {
		return kmsgRecord{}, fmt.Errorf("kmsg record header %q has fewer than 4 fields", header)
	}
	prio, err := strconv.Atoi(f[0])
	if err != nil {
		return kmsgRecord{}, fmt.Errorf("kmsg record header %q: bad priority: %w", header, err)
	}
	seq, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return kmsgRecord{}, fmt.Errorf("kmsg record header %q: bad sequence number: %w", header, err)
	}
	msg, _, _ = strings.Cut(msg, "\n")
	return kmsgRecord{Priority: prio, Seq: seq, Message: msg}, nil
}

// corruption is the kernel's "device-mapper: verity: 7:0: data block 1234
// is corrupted": the device is dm-verity's data device (the loop device
// under the dm device), Kind "data" or "metadata" (a hash block).
type corruption struct {
	Dev   string
	Kind  string
	Block uint64
}

// parseCorruption parses a dm-verity corruption message; ok is false for
// any other message.
func parseCorruption(msg string) (c corruption, ok bool) {
	rest, ok := strings.CutPrefix(msg, "device-mapper: verity: ")
	if !ok {
		return corruption{}, false
	}
	dev, rest, ok := strings.Cut(rest, ": ")
	if !ok || !isDevNumber(dev) {
		return corruption{}, false
	}
	kind, rest, ok := strings.Cut(rest, " block ")
	if !ok || kind == "" || strings.Contains(kind, " ") {
		return corruption{}, false
	}
	num, ok := strings.CutSuffix(rest, " is corrupted")
	block, err := strconv.ParseUint(num, 10, 64)
	if !ok || err != nil {
		return corruption{}, false
	}
	return corruption{Dev: dev, Kind: kind, Block: block}, true
}

// isDevNumber tells whether s is "major:minor" in decimal.
func isDevNumber(s string) bool {
	maj, min, ok := strings.Cut(s, ":")
	_, err1 := strconv.ParseUint(maj, 10, 32)
	_, err2 := strconv.ParseUint(min, 10, 32)
	return ok && err1 == nil && err2 == nil
}

// handle logs rec if it is a dm-verity corruption message, with the layer
// under the device it names as sysfs shows it now (the device is normally
// still there: the read that failed holds its mount), else as the registry
// last recorded it. A record numbered at or below after was handled by an
// earlier run and is skipped. It returns the sequence number of a
// corruption it logged.
func (c VerityLog) handle(logger *zap.Logger, rec []byte, after int64) (seq uint64, logged bool) {
	r, err := parseKmsg(rec)
	if err != nil {
		logger.Warn("failed to parse a kernel log record", zap.Error(err))
		return 0, false
	}
	if after >= 0 && r.Seq <= uint64(after) {
		return 0, false
	}
	cor, ok := parseCorruption(r.Message)
	if !ok {
		return 0, false
	}
	fields := []zap.Field{
		zap.String("reported_dev", cor.Dev), zap.String("block_type", cor.Kind),
		zap.Uint64("block", cor.Block), zap.Uint64("kmsg_seq", r.Seq),
	}
	d, err := describeDev(c.Sys, cor.Dev)
	if err != nil {
		recorded, ok := c.Registry.lookup(cor.Dev)
		if !ok {
			logger.Error("dm-verity: corrupted block on a device whose layer is unknown", append(fields, zap.Error(err))...)
			return r.Seq, true
		}
		d = recorded
		fields = append(fields, zap.String("resolved_from", "registry"))
	}
	if c.System != "" && d.Name == c.System {
		// No loop device nor blob under it: the partition itself.
		fields = append(fields, zap.String("name", d.Name), zap.String("device", d.Kernel), zap.String("dev", d.Dev))
		logger.Error("dm-verity: corrupted block in the system partition", append(fields, c.systemFields(d, cor)...)...)
		return r.Seq, true
	}
	logger.Error("dm-verity: corrupted block in a layer blob", append(fields, d.fields()...)...)
	return r.Seq, true
}

// Run reads the kernel log, from its oldest record, until ctx ends.
func (c VerityLog) Run(ctx context.Context) error {
	if c.Sys == "" {
		c.Sys = DefaultSys
	}
	if c.Kmsg == "" {
		c.Kmsg = DefaultKmsg
	}
	if c.Dev == "" {
		c.Dev = DefaultDev
	}
	if c.Root == "" {
		c.Root = "/"
	}
	logger := supervisor.Logger(ctx)
	after, err := readCursor(c.Cursor)
	if err != nil {
		// Old corruptions reported twice beat new ones not reported.
		logger.Warn("reading the kernel log without a cursor", zap.Error(err))
	}
	// Non-blocking, so that the runtime's poller waits for records and
	// Close ends a pending read.
	fd, err := unix.Open(c.Kmsg, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", c.Kmsg, err)
	}
	f := os.NewFile(uintptr(fd), c.Kmsg)
	defer f.Close()
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	supervisor.Signal(ctx, supervisor.SignalHealthy)
	// A record is at most about 8 KiB (kernel's PRINTK_MESSAGE_MAX + metadata).
	buf := make([]byte, 16<<10)
	for {
		n, err := f.Read(buf)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, unix.EPIPE):
			// Records were overwritten before they were read; the next
			// read goes on with the oldest left.
			logger.Warn("kernel log records were lost before they were read")
		case err != nil:
			return fmt.Errorf("failed to read %s: %w", c.Kmsg, err)
		default:
			if seq, ok := c.handle(logger, buf[:n], after); ok {
				if err := writeCursor(c.Cursor, seq); err != nil {
					logger.Warn("failed to record the kernel log cursor", zap.Error(err))
				}
			}
		}
	}
}
