package containerd_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/core/containerd/containerdtest"
)

// containerd reads the generated configuration as we mean it: the CRI
// image service uses our snapshotter and pins our sandbox image, and the
// plugins the CRI needs load.
func TestConfigAcceptedByContainerd(t *testing.T) {
	cfg := containerdtest.NewConfig(t)
	cfg.SandboxImage = "preseed.test/pause:3.10"
	if err := cfg.WriteConfig(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cfg.Binary, "--config", cfg.ConfigPath, "config", "dump").CombinedOutput()
	if err != nil {
		t.Fatalf("containerd config dump: %v\n%s", err, out)
	}
	dump := string(out)
	for _, want := range []string{
		`sandbox = 'preseed.test/pause:3.10'`,
		`snapshotter = '` + cfg.Snapshotter + `'`,
		`root = '` + cfg.Root + `'`,
		`address = '` + cfg.Address + `'`,
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("containerd's view of the config lacks %s:\n%s", want, dump)
		}
	}

	d := containerdtest.StartConfig(t, cfg)
	c := d.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := c.IntrospectionService().Plugins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	loaded := map[string]bool{}
	for _, p := range resp.Plugins {
		if p.InitErr == nil {
			loaded[p.Type+"."+p.ID] = true
		}
	}
	for _, want := range []string{
		"io.containerd.cri.v1.images",
		"io.containerd.snapshotter.v1." + cfg.Snapshotter,
		"io.containerd.transfer.v1.local",
	} {
		if !loaded[want] {
			t.Errorf("plugin %s did not load", want)
		}
	}
}
