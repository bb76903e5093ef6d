package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// What comes before the JSON log's device exists is kept and written
// first, once it can be opened: no line is lost to the early boot.
func TestLazySinkHoldsUntilOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev", "ttyS1")
	s := &lazySink{path: path}
	if _, err := s.Write([]byte("early\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("late\n")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "early\nlate\n" {
		t.Errorf("the JSON log holds %q, want the early line, then the late one", got)
	}
}

// The console gets one line for people per entry; the JSON log one object
// with every field.
func TestLoggerWritesBoth(t *testing.T) {
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "json")
	if err := os.WriteFile(jsonPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(logJSONEnv, jsonPath)
	stderr := os.Stderr
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	os.Stderr = w
	logger := newLogger("init")
	os.Stderr = stderr
	logger.Error("boot failed; powering off")
	w.Close()
	var console strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		console.Write(buf[:n])
		if err != nil {
			break
		}
	}
	line := console.String()
	if !strings.Contains(line, "  ERROR  init  boot failed; powering off") || strings.Contains(line, "{") {
		t.Errorf("console line %q, want time, ERROR, init and the message, no JSON", line)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Level, Logger, Msg string }
	if err := json.Unmarshal(b, &e); err != nil || e.Level != "error" || e.Logger != "init" || e.Msg != "boot failed; powering off" {
		t.Errorf("JSON line %q (%v), want level error, logger init and the message", b, err)
	}
}
