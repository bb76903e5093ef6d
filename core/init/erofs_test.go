package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/core/kmod"
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

// Without erofs the gate fails with the reason and never starts containerd;
// with it, containerd runs.
func TestErofsGate(t *testing.T) {
	fs := filepath.Join(t.TempDir(), "filesystems")
	ran := false
	run := func(context.Context) error { ran = true; return nil }
	os.WriteFile(fs, []byte(withoutErofs), 0o644)
	err := erofsGate(run, "module erofs failed to load: blacklisted", fs)(context.Background())
	if ran || err == nil || err.Error() != "containerd not started: module erofs failed to load: blacklisted" {
		t.Fatalf("gate without erofs: ran %v, err %v", ran, err)
	}
	os.WriteFile(fs, []byte(withErofs), 0o644)
	if err := erofsGate(run, "stale reason", fs)(context.Background()); err != nil || !ran {
		t.Fatalf("gate with erofs: ran %v, err %v", ran, err)
	}
	if err := erofsGate(run, "", filepath.Join(t.TempDir(), "missing"))(context.Background()); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("gate with no file: %v, want an error naming it", err)
	}
}
