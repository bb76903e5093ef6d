// Package status is preseed's status file: its schema, its path, its
// states and results, and how it is written and read. Preseed writes it;
// the kubelet waits for it and the tests read it. It must hold nothing of
// how bundles are checked or imported, so that its readers link none of
// that (no containerd client).
package status

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/appliance-bundler/appliance/core/atomicfile"
)

// DefaultPath is where preseed writes its status on the appliance.
const DefaultPath = "/run/preseed/status.json"

// StateDone is a status's State once every bundle was handled and the CRI
// serves every name registered (see core/preseed).
const StateDone = "done"

// Results of one bundle.
const (
	ResultImported = "imported"
	ResultSkipped  = "skipped"
	ResultFailed   = "failed"
)

// Status is the content of the status file.
type Status struct {
	// State is StateDone once every bundle was handled.
	State    string    `json:"state"`
	Started  time.Time `json:"started"`
	Duration float64   `json:"duration_seconds"`
	Imported int       `json:"imported"`
	Skipped  int       `json:"skipped"`
	Failed   int       `json:"failed"`
	// Bytes is what was read from bundle files.
	Bytes    int64     `json:"bytes"`
	Bundles  []Bundle  `json:"bundles"`
	Ignored  []Ignored `json:"ignored,omitempty"`
	Unpinned []Image   `json:"unpinned,omitempty"`
}

// Bundle is the result of one bundle.
type Bundle struct {
	Namespace string  `json:"namespace"`
	File      string  `json:"file"`
	Result    string  `json:"result"`
	Error     string  `json:"error,omitempty"`
	Images    []Image `json:"images,omitempty"`
	Bytes     int64   `json:"bytes"`
	Duration  float64 `json:"duration_seconds"`
}

// Image names an image.
type Image struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Digest is the image's target: index.json's descriptor.
	Digest string `json:"digest"`
	// References are the names registered for the image (Name, then
	// repo@Digest and, for an index, repo@ the unpacked manifest), when
	// its bundle was imported or skipped.
	References []string `json:"references,omitempty"`
}

// Ignored is a path in the preseed tree that is not a bundle.
type Ignored struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// Write replaces the status file atomically, so a reader never sees half
// of it.
func Write(path string, st *Status) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("failed to create directory of %s: %w", path, err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode status: %w", err)
	}
	return atomicfile.Write(path, append(b, '\n'), 0o644)
}

// Read reads the status file at path.
func Read(path string) (*Status, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read preseed status %s: %w", path, err)
	}
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("failed to parse preseed status %s: %w", path, err)
	}
	return &st, nil
}
