package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadValidates(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "update.json")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := Read(write(`{"source": "http://10.0.2.100/u", "poll_interval": "5s", "health_timeout": "3m", "reboot_window": "22:00-02:00"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.PollInterval != Duration(5*time.Second) || c.HealthTimeout != Duration(3*time.Minute) {
		t.Errorf("read %+v", c)
	}
	b, _ := json.Marshal(c)
	if !strings.Contains(string(b), `"3m0s"`) {
		t.Errorf("written as %s", b)
	}
	for _, bad := range []struct{ json, want string }{
		{`{"source": "ftp://x", "poll_interval": "5s", "health_timeout": "3m"}`, "want an http"},
		{`{"source": "/a/../b", "poll_interval": "5s", "health_timeout": "3m"}`, "not a clean"},
		{`{"source": "/srv", "poll_interval": "5s", "health_timeout": "3s"}`, "at least 30s"},
		{`{"source": "/srv", "poll_interval": "5s", "health_timeout": "3m", "reboot_window": "25:00-01:00"}`, "HH:MM-HH:MM"},
		{`{"source": "/srv", "poll_interval": 5, "health_timeout": "3m"}`, "must be a string"},
		{`{"source": "/srv", "poll_interval": "5s", "health_timeout": "3m", "x": 1}`, "unknown field"},
	} {
		if _, err := Read(write(bad.json)); err == nil || !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), "update.json") {
			t.Errorf("%s: error %v, want one naming the file and %q", bad.json, err, bad.want)
		}
	}
}

func TestInWindow(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 12, 2, h, m, 0, 0, time.UTC) }
	for _, c := range []struct {
		window string
		now    time.Time
		in     bool
		wait   time.Duration
	}{
		{"", at(12, 0), true, 0},
		{"02:00-04:00", at(3, 0), true, 0},
		{"02:00-04:00", at(1, 0), false, time.Hour},
		{"02:00-04:00", at(5, 0), false, 21 * time.Hour},
		{"22:00-02:00", at(23, 30), true, 0},
		{"22:00-02:00", at(1, 0), true, 0},
		{"22:00-02:00", at(12, 0), false, 10 * time.Hour},
	} {
		in, wait := Config{RebootWindow: c.window}.InWindow(c.now)
		if in != c.in || wait != c.wait {
			t.Errorf("%q at %s: %v, %s; want %v, %s", c.window, c.now.Format("15:04"), in, wait, c.in, c.wait)
		}
	}
}
