// Package status is the updater's status file: its schema and path on the
// data partition, which every system of the appliance shares, so that the
// system a rollback returns to reads what the failed one wrote. The
// updater writes it; the E2E variant serves it and the tests read it. It
// must hold nothing of how updates are fetched or installed.
package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/appliance-bundler/appliance/core/atomicfile"
	"github.com/appliance-bundler/appliance/core/node"
)

// Path is the status file, on the data partition (mounted at containerd's
// root).
const Path = node.ContainerdRoot + "/appliance-update/status.json"

// Results of an update.
const (
	// ResultInstalled: written to the other slot, waiting for the reboot.
	ResultInstalled = "installed"
	// ResultTrying: booted once, not yet healthy.
	ResultTrying = "trying"
	// ResultCommitted: healthy in time; the new default.
	ResultCommitted = "committed"
	// ResultFailed: not healthy in time, or its boot failed; rolled back,
	// never tried again.
	ResultFailed = "failed"
	// ResultRefused: the payload was refused (signature, version, bytes).
	ResultRefused = "refused"
)

// Status is the content of Path.
type Status struct {
	// Version and Slot are the running system's.
	Version string `json:"version"`
	Slot    string `json:"slot"`
	// Last is the last update tried, if any.
	Last *Update `json:"last_update,omitempty"`
	// Failed lists the versions that failed; none is tried again.
	Failed []string `json:"failed_versions,omitempty"`
}

// Update is one update's result.
type Update struct {
	Version string    `json:"version"`
	Slot    string    `json:"slot,omitempty"`
	Result  string    `json:"result"`
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time"`
	// BytesRead is what was read from the source, BytesWritten what was
	// written to the slot and the ESP.
	BytesRead    int64 `json:"bytes_read,omitempty"`
	BytesWritten int64 `json:"bytes_written,omitempty"`
}

// HasFailed tells whether version is among the failed ones.
func (s Status) HasFailed(version string) bool { return slices.Contains(s.Failed, version) }

// Read reads the status at path; a missing file is an empty status.
func Read(path string) (Status, error) {
	var s Status
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Write replaces the status at path whole.
func Write(path string, s Status) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}
