package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/appliance-bundler/appliance/core/kmod"
	"github.com/appliance-bundler/appliance/core/supervisor"
)

const (
	withErofs    = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n\terofs\n"
	withoutErofs = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n\terofsx\n"
)

func TestHasFilesystem(t *testing.T) {
	if !hasFilesystem([]byte(withErofs), "erofs") || hasFilesystem([]byte(withoutErofs), "erofs") || hasFilesystem(nil, "erofs") {
		t.Fatal("hasFilesystem misreads /proc/filesystems")
	}
	if !hasFilesystem([]byte(withErofs), "tmpfs") {
		t.Fatal("hasFilesystem misses a nodev file system")
	}
}

// The reason names the module's own failure (as kmod reports a blacklisted
// module) and what it costs.
func TestErofsProblemSaysWhy(t *testing.T) {
	if err := erofsProblem([]byte(withErofs), errors.New("veth failed")); err != nil {
		t.Fatalf("erofsProblem with erofs present = %v", err)
	}
	blacklisted := errors.Join(&kmod.LoadError{Module: "veth", Err: errors.New("x")},
		&kmod.LoadError{Module: "erofs", Err: errors.New("finit_module /lib/modules/r/kernel/fs/erofs/erofs.ko: operation not permitted (the kernel command line blacklists it: module_blacklist)")})
	for _, c := range []struct {
		loadErr error
		want    string
	}{
		{blacklisted, "module erofs failed to load: finit_module /lib/modules/r/kernel/fs/erofs/erofs.ko: operation not permitted (the kernel command line blacklists it: module_blacklist); the erofs snapshotter cannot mount preseeded images, so no pod can start"},
		{errors.New("failed to open /lib/modules/r/modules.dep: no such file"), "module erofs failed to load: failed to open /lib/modules/r/modules.dep: no such file; the erofs"},
		{nil, "module erofs failed to load: it loaded without error, yet erofs is not in /proc/filesystems; the erofs"},
	} {
		err := erofsProblem([]byte(withoutErofs), c.loadErr)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("erofsProblem(%v) =\n%v\nwant prefix\n%s", c.loadErr, err, c.want)
		}
	}
}

// Without erofs the gate never starts containerd and says so in one line,
// however many times it looks again; once erofs is there, containerd runs.
// A file that cannot be read is an error naming it.
func TestErofsGate(t *testing.T) {
	const looks = 50
	fs := filepath.Join(t.TempDir(), "filesystems")
	if err := os.WriteFile(fs, []byte(withoutErofs), 0o644); err != nil {
		t.Fatal(err)
	}
	ran := false
	run := func(context.Context) error { ran = true; return nil }
	waits := 0
	wait := func(context.Context) error {
		if ran {
			t.Error("containerd ran without erofs")
		}
		if waits++; waits == looks {
			return os.WriteFile(fs, []byte(withErofs), 0o644)
		}
		return nil
	}
	core, logs := observer.New(zapcore.InfoLevel)
	ended := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	s := supervisor.New(ctx, zap.New(core), func(ctx context.Context) error {
		ended <- erofsGate(run, "module erofs failed to load: blacklisted", fs, wait)(ctx)
		supervisor.Signal(ctx, supervisor.SignalHealthy)
		supervisor.Signal(ctx, supervisor.SignalDone)
		return nil
	})
	defer func() { cancel(); s.Wait() }()
	select {
	case err := <-ended:
		if err != nil || !ran || waits != looks {
			t.Fatalf("gate = %v, containerd ran %v after %d waits; want nil, true, %d", err, ran, waits, looks)
		}
	case <-time.After(time.Minute):
		t.Fatal("the gate did not return")
	}
	var lines []string
	for _, e := range logs.All() {
		lines = append(lines, e.Level.String()+": "+e.Message)
	}
	want := []string{
		"info: containerd waits for erofs, which the kernel lacks (see PID 1's error)",
		"info: erofs is available now; starting containerd",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("the gate logged %q, want %q", lines, want)
	}
	err := erofsGate(run, "", filepath.Join(t.TempDir(), "missing"), wait)(context.Background())
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("gate with no file: %v, want an error naming it", err)
	}
}
