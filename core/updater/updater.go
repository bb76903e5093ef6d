// Package updater is the appliance's updater: a supervised runnable that
// moves the appliance to a newer release from a signed payload
// (core/updatepayload) and commits it only once the new system is healthy.
//
// The disk has two system slots (core/disklayout). The ESP holds
// systemd-boot and one UKI a slot, each a boot entry named by its version;
// systemd-boot boots the newest entry that has tries left. An update is:
// check the payload's signature and version; remove the other slot's
// entry; stream the system image into the other slot, checking its sha256
// as it is written and its dm-verity hash tree after; name the slot by the
// new root hash; write the new UKI as an entry with one boot try; reboot.
// systemd-boot then boots the new system once, counting its try down. The
// new system's updater commits it (drops the counter) when Health holds
// within the configured time. Otherwise it reboots, and with no tries left
// the new entry is systemd-boot's last choice: the old system boots, by
// itself, and its updater records the new version as failed and never
// tries it again. A boot that fails before the updater runs ends the same
// way at the next boot. Why systemd-boot's boot counting and not a UEFI
// BootNext: its state is a file name on the ESP that this updater writes
// anyway, so it needs no firmware variable store (which firmware keeps
// unreliably, and the E2E's firmware starts empty), and the order it
// boots in is a pure function of the ESP's files.
//
// Images need nothing of the updater: the data partition keeps
// containerd's state, and each system's preseed imports and pins its own
// images and unpins those it no longer has.
//
// It must not write the running slot, and must not use a byte of a
// payload before the manifest's signature is checked.
package updater

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/disklayout"
	"github.com/appliance-bundler/appliance/core/supervisor"
	"github.com/appliance-bundler/appliance/core/systemimage"
	"github.com/appliance-bundler/appliance/core/updatepayload"
	"github.com/appliance-bundler/appliance/core/updater/config"
	"github.com/appliance-bundler/appliance/core/updater/status"
)

// Updater is the runnable's settings.
type Updater struct {
	Config config.Config
	Key    ed25519.PublicKey
	// Version and System are the running system's.
	Version string
	System  systemimage.Info
	// SysBlock and DevDir are where disks are found (/sys/block, /dev).
	SysBlock, DevDir string
	// ESPMount is where the ESP is mounted while the updater runs.
	ESPMount string
	// StatusPath is the status file (status.Path).
	StatusPath string
	// Health tells whether the running system is healthy (NodeHealth).
	Health interface{ Check(context.Context) error }
	// Uptime is the time since the kernel started.
	Uptime func() (time.Duration, error)
	// Reboot asks init to reboot.
	Reboot func() error
	// HealthPoll is how often Health is asked on trial (default 2s).
	HealthPoll time.Duration
}

// Run is the supervised runnable.
func (u Updater) Run(ctx context.Context) error {
	logger := supervisor.Logger(ctx).With(zap.String("version", u.Version))
	bd, err := findBootDisk(u.SysBlock, u.DevDir, u.System.RootHash)
	if err != nil {
		return err
	}
	logger = logger.With(zap.String("slot", bd.running.name))
	unmount, err := mountESP(bd.esp, u.ESPMount)
	if err != nil {
		return err
	}
	defer unmount()
	e := esp{dir: filepath.Join(u.ESPMount, disklayout.EntryDir)}
	st, err := status.Read(u.StatusPath)
	if err != nil {
		logger.Warn("the update status is unreadable; starting a new one", zap.Error(err))
	}
	st.Version, st.Slot = u.Version, bd.running.name
	if err := u.assess(ctx, logger, e, &st); err != nil {
		return err
	}
	if err := status.Write(u.StatusPath, st); err != nil {
		return fmt.Errorf("failed to write the update status: %w", err)
	}
	supervisor.Signal(ctx, supervisor.SignalHealthy)
	return u.poll(ctx, logger, bd, e, &st)
}

// assess settles the boot entries as this boot finds them: it commits the
// running system once healthy if it is on trial (and reboots into the old
// one if not healthy in time), and records as failed a newer version whose
// trial ended without a commit.
func (u Updater) assess(ctx context.Context, logger *zap.Logger, e esp, st *status.Status) error {
	all, err := e.entries()
	if err != nil {
		return err
	}
	for _, en := range all {
		if en.Version == u.Version {
			continue
		}
		newer, err := updatepayload.CompareVersions(en.Version, u.Version)
		if err != nil || newer <= 0 || !en.Bad() {
			continue
		}
		// A newer system was tried and never committed: this boot is
		// the rollback.
		// What the tried system recorded, if it got that far.
		tried := status.Update{Version: en.Version}
		if st.Last != nil && st.Last.Version == en.Version {
			tried = *st.Last
		}
		reason := "its boot did not reach the updater (a failed boot)"
		if tried.Result == status.ResultFailed {
			reason = tried.Reason
		}
		logger.Error("update failed; rolled back", zap.String("failed_version", en.Version), zap.String("reason", reason))
		u.fail(st, en.Version, tried.Slot, reason)
		st.Last.BytesRead, st.Last.BytesWritten = tried.BytesRead, tried.BytesWritten
		if err := e.remove(en); err != nil {
			return err
		}
	}
	mine, ok, err := e.find(u.Version)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no boot entry of the running version %s in %s", u.Version, e.dir)
	}
	if !mine.Counted {
		return nil
	}
	return u.trial(ctx, logger, e, mine, st)
}

// trial waits until the running system is healthy, then commits it; if
// the health timeout (from the kernel's start) passes first, it records
// the failure and reboots into the old system.
func (u Updater) trial(ctx context.Context, logger *zap.Logger, e esp, mine disklayout.Entry, st *status.Status) error {
	logger.Info("on trial: committing once healthy", zap.Duration("health_timeout", time.Duration(u.Config.HealthTimeout)))
	// The install's byte counts stay in the record.
	trying := status.Update{Version: u.Version, Slot: st.Slot, Result: status.ResultTrying, Time: time.Now().UTC()}
	if st.Last != nil && st.Last.Version == u.Version {
		trying.BytesRead, trying.BytesWritten = st.Last.BytesRead, st.Last.BytesWritten
	}
	st.Last = &trying
	if err := status.Write(u.StatusPath, *st); err != nil {
		return err
	}
	var last error
	for {
		up, err := u.Uptime()
		if err != nil {
			return err
		}
		if last = u.Health.Check(ctx); last == nil {
			break
		}
		if up >= time.Duration(u.Config.HealthTimeout) {
			reason := fmt.Sprintf("not healthy %s after boot: %v", time.Duration(u.Config.HealthTimeout), last)
			logger.Error("update not healthy in time; rolling back", zap.String("reason", reason))
			u.fail(st, u.Version, st.Slot, reason)
			st.Last.BytesRead, st.Last.BytesWritten = trying.BytesRead, trying.BytesWritten
			if err := status.Write(u.StatusPath, *st); err != nil {
				logger.Error("failed to write the update status", zap.Error(err))
			}
			return u.reboot(ctx, logger, "rollback of "+u.Version)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(cmp.Or(u.HealthPoll, 2*time.Second)):
		}
	}
	if err := e.commit(mine); err != nil {
		return err
	}
	up, _ := u.Uptime()
	logger.Info("update committed", zap.Duration("healthy_after_boot", up))
	trying.Result, trying.Time = status.ResultCommitted, time.Now().UTC()
	st.Last = &trying
	return nil
}

// fail records version as failed, for good.
func (u Updater) fail(st *status.Status, version, slot, reason string) {
	st.Last = &status.Update{Version: version, Slot: slot, Result: status.ResultFailed, Reason: reason, Time: time.Now().UTC()}
	if !st.HasFailed(version) {
		st.Failed = append(st.Failed, version)
	}
}

// reboot asks init to reboot and waits for it.
func (u Updater) reboot(ctx context.Context, logger *zap.Logger, why string) error {
	logger.Info("rebooting", zap.String("reason", why))
	if err := u.Reboot(); err != nil {
		return fmt.Errorf("failed to ask init to reboot: %w", err)
	}
	<-ctx.Done()
	return ctx.Err()
}

// mountESP mounts the ESP (vfat) at dir until the returned function runs.
func mountESP(dev, dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := unix.Mount(dev, dir, "vfat", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "umask=0077,codepage=437,iocharset=ascii"); err != nil && !errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("failed to mount the ESP %s (vfat) at %s: %w", dev, dir, err)
	}
	return func() { unix.Unmount(dir, 0) }, nil
}
