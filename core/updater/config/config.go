// Package config is the updater's configuration: the contract between the
// build (build/update's update_config writes it, checked by this package,
// into the system at Path, beside the public key at KeyPath) and the
// appliance's updater (core/updater), which reads it at boot. The system
// partition holds both, so dm-verity covers them.
//
// It holds the schema and its checks only: it must not fetch or install
// anything.
package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Paths in the system.
const (
	// Path is the configuration; a system without it has no updater.
	Path = "/etc/appliance/update.json"
	// KeyPath is the Ed25519 public key (PEM, PKIX) that payloads must be
	// signed with (core/updatepayload).
	KeyPath = "/etc/appliance/update.pem"
)

// Config is the content of Path.
type Config struct {
	// Source is where payloads are published: an http:// or https:// base
	// URL, or an absolute directory on the appliance (for air-gapped
	// sites: a directory on the data partition, or on a disk mounted
	// there). It holds one payload's files (core/updatepayload).
	Source string `json:"source"`
	// PollInterval is how often the source is checked.
	PollInterval Duration `json:"poll_interval"`
	// HealthTimeout is how long, from the kernel's start, a new system has
	// to become healthy before it is rolled back.
	HealthTimeout Duration `json:"health_timeout"`
	// RebootWindow is when the appliance reboots into an installed update:
	// empty for at once, or "HH:MM-HH:MM" (UTC), every day; a window may
	// cross midnight.
	RebootWindow string `json:"reboot_window,omitempty"`
}

// Duration is a time.Duration written as Go writes it ("90s", "5m0s").
type Duration time.Duration

// MarshalJSON writes d as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a string of time.ParseDuration.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string such as \"5m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Validate tells whether c can be run.
func (c Config) Validate() error {
	if c.Source == "" {
		return fmt.Errorf("no source")
	}
	if strings.HasPrefix(c.Source, "/") {
		if filepath.Clean(c.Source) != c.Source {
			return fmt.Errorf("source %q: not a clean absolute path", c.Source)
		}
	} else if u, err := url.Parse(c.Source); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("source %q: want an http:// or https:// URL, or an absolute directory", c.Source)
	}
	if c.PollInterval < Duration(time.Second) {
		return fmt.Errorf("poll_interval %s: at least 1s", time.Duration(c.PollInterval))
	}
	if c.HealthTimeout < Duration(30*time.Second) {
		return fmt.Errorf("health_timeout %s: at least 30s, for a system to boot and start its pods", time.Duration(c.HealthTimeout))
	}
	if c.RebootWindow != "" {
		if _, _, err := ParseWindow(c.RebootWindow); err != nil {
			return err
		}
	}
	return nil
}

// ParseWindow reads "HH:MM-HH:MM" as offsets from midnight.
func ParseWindow(w string) (from, to time.Duration, err error) {
	a, b, ok := strings.Cut(w, "-")
	if ok {
		from, err = clock(a)
		if err == nil {
			to, err = clock(b)
		}
	}
	if !ok || err != nil || from == to {
		return 0, 0, fmt.Errorf("reboot_window %q: want HH:MM-HH:MM (UTC), two different times", w)
	}
	return from, to, nil
}

func clock(s string) (time.Duration, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, err
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
}

// InWindow tells whether now (UTC) is inside the window, and if not how
// long until it opens. An empty window is always open.
func (c Config) InWindow(now time.Time) (bool, time.Duration) {
	if c.RebootWindow == "" {
		return true, 0
	}
	from, to, err := ParseWindow(c.RebootWindow)
	if err != nil {
		return true, 0
	}
	now = now.UTC()
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	t := now.Sub(day)
	in := (from < to && t >= from && t < to) || (from > to && (t >= from || t < to))
	if in {
		return true, 0
	}
	wait := from - t
	if wait < 0 {
		wait += 24 * time.Hour
	}
	return false, wait
}

// Read reads and validates the configuration at path.
func Read(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
