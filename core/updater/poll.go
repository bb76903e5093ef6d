package updater

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/appliance-bundler/appliance/core/updatepayload"
	"github.com/appliance-bundler/appliance/core/updater/status"
)

// poll checks the source every PollInterval and installs a newer payload.
// A manifest refused for itself (signature, version) is logged once, not
// at each poll; one whose files were refused is fetched again only after
// retryRefused polls, as its files may be published again.
func (u Updater) poll(ctx context.Context, logger *zap.Logger, bd bootDisk, e esp, st *status.Status) error {
	src := newSource(u.Config.Source)
	seen := ""
	var retryAt time.Time
	for {
		m, sum, err := u.check(ctx, src)
		switch {
		case errors.Is(err, errNoPayload):
		case sum == seen && (err != nil || time.Now().Before(retryAt)):
		case err != nil:
			seen = sum
			logger.Error("update refused", zap.String("source", u.Config.Source), zap.Error(err))
			u.refused(logger, st, status.Update{Version: m.Version, Reason: err.Error()})
		default:
			seen, retryAt = sum, time.Time{}
			done, err := u.offer(ctx, logger, src, bd, e, st, m)
			switch {
			case errors.As(err, new(refusal)):
				retryAt = time.Now().Add(retryRefused * time.Duration(u.Config.PollInterval))
				logger.Error("update refused", zap.String("new_version", m.Version), zap.String("to_slot", bd.other.name), zap.Error(err))
			case err != nil:
				seen = "" // a failure to fetch or write is tried again
				logger.Error("update failed; trying again", zap.String("new_version", m.Version), zap.String("to_slot", bd.other.name), zap.Error(err))
			case done:
				return u.rebootInWindow(ctx, logger, m.Version)
			default:
				// Up to date, or a version that failed: nothing to do
				// for this manifest.
				retryAt = time.Now().Add(never)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(u.Config.PollInterval)):
		}
	}
}

// retryRefused is how many polls pass before the files of a refused
// payload are fetched again.
const retryRefused = 10

// never is a retry time that does not come.
const never = 100 * 365 * 24 * time.Hour

// check fetches and verifies the manifest; sum identifies it (the sha256
// of the manifest and its signature).
func (u Updater) check(ctx context.Context, src source) (updatepayload.Manifest, string, error) {
	manifest, err := readSmall(ctx, src, updatepayload.ManifestFile, updatepayload.MaxManifestSize)
	if err != nil {
		return updatepayload.Manifest{}, "", err
	}
	sig, err := readSmall(ctx, src, updatepayload.SignatureFile, 1024)
	if err != nil {
		return updatepayload.Manifest{}, "", err
	}
	h := sha256.New()
	h.Write(manifest)
	h.Write(sig)
	sum := hex.EncodeToString(h.Sum(nil))
	m, err := updatepayload.Verify(u.Key, manifest, sig)
	return m, sum, err
}

// offer installs m if it is newer than the running version and has not
// failed before; done tells whether it was installed.
func (u Updater) offer(ctx context.Context, logger *zap.Logger, src source, bd bootDisk, e esp, st *status.Status, m updatepayload.Manifest) (done bool, err error) {
	cmp, err := updatepayload.CompareVersions(m.Version, u.Version)
	if err != nil {
		return false, err
	}
	switch {
	case cmp == 0:
		logger.Debug("up to date")
		return false, nil
	case cmp < 0:
		err := refuse("version %s is older than the running %s: a downgrade is refused", m.Version, u.Version)
		u.refused(logger, st, status.Update{Version: m.Version, Reason: err.Error()})
		return false, err
	case st.HasFailed(m.Version):
		logger.Warn("update skipped: this version failed before", zap.String("new_version", m.Version))
		return false, nil
	}
	logger.Info("update found", zap.String("new_version", m.Version), zap.String("to_slot", bd.other.name),
		zap.Int64("download_bytes", m.System.Compressed.Size+m.UKI.Size))
	start := time.Now()
	read, written, err := u.install(ctx, logger, src, bd, e, m)
	if err != nil {
		if errors.As(err, new(refusal)) {
			u.refused(logger, st, status.Update{Version: m.Version, Slot: bd.other.name, Reason: err.Error(), BytesRead: read, BytesWritten: written})
		}
		return false, err
	}
	logger.Info("update installed", zap.String("new_version", m.Version), zap.String("to_slot", bd.other.name),
		zap.Int64("bytes_read", read), zap.Int64("bytes_written", written), zap.Duration("took", time.Since(start)))
	st.Last = &status.Update{Version: m.Version, Slot: bd.other.name, Result: status.ResultInstalled, Time: time.Now().UTC(), BytesRead: read, BytesWritten: written}
	return true, status.Write(u.StatusPath, *st)
}

// refused records a refused payload as the last update. The status is a
// report: a failure to write it is logged, and the poll goes on.
func (u Updater) refused(logger *zap.Logger, st *status.Status, last status.Update) {
	last.Result, last.Time = status.ResultRefused, time.Now().UTC()
	st.Last = &last
	if err := status.Write(u.StatusPath, *st); err != nil {
		logger.Error("failed to write the update status", zap.Error(err))
	}
}

// install writes m into the other slot and its UKI as the entry to try.
// The other slot's entry goes first, so that no entry names a slot being
// written, whatever cuts the update short.
func (u Updater) install(ctx context.Context, logger *zap.Logger, src source, bd bootDisk, e esp, m updatepayload.Manifest) (read, written int64, err error) {
	all, err := e.entries()
	if err != nil {
		return 0, 0, err
	}
	for _, en := range all {
		if en.Version != u.Version {
			if err := e.remove(en); err != nil {
				return 0, 0, err
			}
		}
	}
	r, err := src.open(ctx, updatepayload.SystemFile)
	if err != nil {
		return 0, 0, err
	}
	logger.Info("writing the system", zap.String("new_version", m.Version), zap.String("to_slot", bd.other.name), zap.String("device", bd.other.dev))
	read, written, err = writeSystem(bd.other, m, r)
	r.Close()
	if err != nil {
		return read, written, err
	}
	if err := verifySlot(bd.other, m.System.Info); err != nil {
		return read, written, err
	}
	if err := setSlotGUID(bd.dev, bd.other, m.System.RootHash); err != nil {
		return read, written, err
	}
	uki, err := readSmall(ctx, src, updatepayload.UKIFile, m.UKI.Size)
	if err != nil {
		return read, written, err
	}
	read += int64(len(uki))
	sum := sha256.Sum256(uki)
	if err := match(updatepayload.UKIFile, int64(len(uki)), sum[:], m.UKI); err != nil {
		return read, written, err
	}
	n, err := e.install(m.Version, bytes.NewReader(uki))
	return read, written + n, err
}

// rebootInWindow waits for the reboot window, then reboots into version.
func (u Updater) rebootInWindow(ctx context.Context, logger *zap.Logger, version string) error {
	for {
		in, wait := u.Config.InWindow(time.Now())
		if in {
			return u.reboot(ctx, logger, "update to "+version)
		}
		logger.Info("update installed; rebooting in the reboot window", zap.String("new_version", version), zap.String("window", u.Config.RebootWindow), zap.Duration("in", wait))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}
