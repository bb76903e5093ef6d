package containerd_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/appliance-bundler/appliance/core/containerd"
	"github.com/appliance-bundler/appliance/core/erofscache"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/tests/containerdtest"
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
		`required_plugins = ['io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.images', 'io.containerd.cri.v1.runtime']`,
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("containerd's view of the config lacks %s:\n%s", want, dump)
		}
	}

	loaded := loadedPlugins(t, cfg)
	for _, want := range []string{
		"io.containerd.grpc.v1.cri",
		"io.containerd.cri.v1.images",
		"io.containerd.cri.v1.runtime",
		"io.containerd.snapshotter.v1." + cfg.Snapshotter,
		"io.containerd.transfer.v1.local",
	} {
		if !loaded[want] {
			t.Errorf("plugin %s did not load", want)
		}
	}
}

// dumped is what the tests read back from containerd's view of the config.
type dumped struct {
	Root            string   `toml:"root"`
	State           string   `toml:"state"`
	RequiredPlugins []string `toml:"required_plugins"`
}

// Paths with characters Go's strconv.Quote writes as \x escapes, which TOML
// has not got, reach containerd as they are.
func TestConfigPathsContainerdReadsBack(t *testing.T) {
	cfg := containerdtest.NewConfig(t)
	odd := "odd \x7f\x01 é\u00a0 \\x41 '\""
	cfg.Root = filepath.Join(cfg.Root, odd)
	cfg.State = filepath.Join(cfg.State, odd)
	// Without this the test would not exercise the escapes TOML rejects.
	if !strings.Contains(strconv.Quote(cfg.Root), `\x7f`) {
		t.Fatalf("strconv.Quote(%q) has no \\x escape", cfg.Root)
	}
	if err := cfg.WriteConfig(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cfg.Binary, "--config", cfg.ConfigPath, "config", "dump").Output()
	if err != nil {
		t.Fatalf("containerd config dump: %v\n%s", err, out)
	}
	var got dumped
	if err := toml.Unmarshal(out, &got); err != nil {
		t.Fatalf("failed to parse containerd's config dump: %v\n%s", err, out)
	}
	if got.Root != cfg.Root || got.State != cfg.State {
		t.Errorf("containerd read root %q, state %q; want %q, %q", got.Root, got.State, cfg.Root, cfg.State)
	}
	if want := containerd.RequiredPlugins(); !slices.Equal(got.RequiredPlugins, want) {
		t.Errorf("containerd read required_plugins %q, want %q", got.RequiredPlugins, want)
	}

	containerdtest.StartConfig(t, cfg)
	// containerd itself creates its metadata database under the root.
	meta := filepath.Join(cfg.Root, "io.containerd.metadata.v1.bolt", "meta.db")
	if _, err := os.Stat(meta); err != nil {
		t.Errorf("containerd did not use the root %q: %v", cfg.Root, err)
	}
}

// A required plugin that is disabled or fails to load stops containerd at
// once, with an error naming the plugin.
func TestBrokenRequiredPluginStopsContainerd(t *testing.T) {
	for name, tc := range map[string]struct {
		change func(*containerd.Config)
		plugin string
		// path replaces containerd's PATH when set.
		path string
	}{
		// The appliance's erofs path: without mkfs.erofs the differ cannot
		// convert the layers the cache lacks.
		"no mkfs.erofs": {
			change: func(c *containerd.Config) {
				*c = containerdtest.NewErofsConfig(t, t.TempDir())
			},
			plugin: "io.containerd.differ.v1.erofs",
			path:   t.TempDir(),
		},
		"disabled": {
			change: func(c *containerd.Config) {
				c.DisabledPlugins = append(c.DisabledPlugins, "io.containerd.cri.v1.runtime")
			},
			plugin: "io.containerd.cri.v1.runtime",
		},
		"broken": {
			// The CRI image service fails without its snapshotter.
			change: func(c *containerd.Config) { c.Snapshotter = "nonexistent" },
			plugin: "io.containerd.cri.v1.images",
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := containerdtest.NewConfig(t)
			tc.change(&cfg)
			if err := cfg.WriteConfig(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, cfg.Binary, "--config", cfg.ConfigPath)
			if tc.path != "" {
				cmd.Env = append(os.Environ(), "PATH="+tc.path)
			}
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if ctx.Err() != nil || !errors.As(err, &exit) {
				t.Fatalf("containerd did not exit with an error (%v, %v):\n%s", err, ctx.Err(), out)
			}
			last := lastLine(string(out))
			if !strings.Contains(last, "required plugin") || !strings.Contains(last, tc.plugin) {
				t.Errorf("containerd exited (%v) without naming required plugin %s; last line: %s", err, tc.plugin, last)
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// A path that is not UTF-8 cannot be written as TOML: the error names it
// instead of leaving a file containerd refuses.
func TestConfigRejectsNonUTF8(t *testing.T) {
	cfg := containerd.Config{Root: "/var/lib/\xffcontainerd", ConfigPath: filepath.Join(t.TempDir(), "config.toml")}
	err := cfg.WriteConfig()
	if err == nil || !strings.Contains(err.Error(), "root") || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("WriteConfig with a non-UTF-8 root: %v, want an error naming the root", err)
	}
	if _, err := os.Stat(cfg.ConfigPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a config was written anyway: %v", err)
	}
}

// The appliance's erofs configuration reaches containerd as meant: the CRI
// and the transfer service unpack into erofs, the snapshotter serves the
// layer cache with dm-verity required, the differ converts with dm-verity
// and a fixed time, erofs is the first differ, and the erofs plugins are
// required. Only the dump: the hosts tests run on have no dm_verity.
func TestErofsConfigAsContainerdReadsIt(t *testing.T) {
	cfg := containerdtest.NewConfig(t)
	cfg.Snapshotter, cfg.LayerContentCaches, cfg.DmverityMode = "", nil, ""
	if err := cfg.WriteConfig(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cfg.Binary, "--config", cfg.ConfigPath, "config", "dump").Output()
	if err != nil {
		t.Fatalf("containerd config dump: %v\n%s", err, out)
	}
	var got struct {
		RequiredPlugins []string `toml:"required_plugins"`
		Plugins         struct {
			CRI struct {
				Snapshotter string `toml:"snapshotter"`
			} `toml:"io.containerd.cri.v1.images"`
			Transfer struct {
				UnpackConfig []struct {
					Snapshotter string `toml:"snapshotter"`
				} `toml:"unpack_config"`
			} `toml:"io.containerd.transfer.v1.local"`
			Snapshotter struct {
				Caches       []string `toml:"layer_content_caches"`
				DmverityMode string   `toml:"dmverity_mode"`
			} `toml:"io.containerd.snapshotter.v1.erofs"`
			Differ struct {
				EnableDmverity bool     `toml:"enable_dmverity"`
				MkfsOptions    []string `toml:"mkfs_options"`
			} `toml:"io.containerd.differ.v1.erofs"`
			DiffService struct {
				Default []string `toml:"default"`
			} `toml:"io.containerd.service.v1.diff-service"`
		} `toml:"plugins"`
	}
	if err := toml.Unmarshal(out, &got); err != nil {
		t.Fatalf("failed to parse containerd's config dump: %v\n%s", err, out)
	}
	p := got.Plugins
	if p.CRI.Snapshotter != "erofs" || len(p.Transfer.UnpackConfig) != 1 || p.Transfer.UnpackConfig[0].Snapshotter != "erofs" {
		t.Errorf("CRI snapshotter %q, transfer unpack %+v; want erofs", p.CRI.Snapshotter, p.Transfer.UnpackConfig)
	}
	if !slices.Equal(p.Snapshotter.Caches, []string{erofscache.Root}) || p.Snapshotter.DmverityMode != node.DmverityMode {
		t.Errorf("erofs snapshotter: caches %q, dmverity_mode %q; want [%s], %s", p.Snapshotter.Caches, p.Snapshotter.DmverityMode, erofscache.Root, node.DmverityMode)
	}
	if !p.Differ.EnableDmverity || !slices.Equal(p.Differ.MkfsOptions, []string{"-T0", "--mkfs-time"}) {
		t.Errorf("erofs differ: enable_dmverity %v, mkfs_options %q", p.Differ.EnableDmverity, p.Differ.MkfsOptions)
	}
	if !slices.Equal(p.DiffService.Default, []string{"erofs", "walking"}) {
		t.Errorf("diff service default %q, want [erofs walking]", p.DiffService.Default)
	}
	for _, want := range containerd.ErofsPlugins() {
		if !slices.Contains(got.RequiredPlugins, want) {
			t.Errorf("required_plugins %q lack %s", got.RequiredPlugins, want)
		}
	}
}

// Our Bazel-built containerd has the erofs snapshotter, differ and mount
// handler, and they load with the test's erofs configuration (mkfs.erofs
// found on PATH, erofs in the kernel).
func TestErofsPluginsLoad(t *testing.T) {
	cfg := containerdtest.NewErofsConfig(t, t.TempDir())
	loaded := loadedPlugins(t, cfg)
	for _, want := range append(containerd.ErofsPlugins(), "io.containerd.grpc.v1.cri") {
		if !loaded[want] {
			t.Errorf("plugin %s did not load", want)
		}
	}
}

// dmverity_mode "on" without dm-verity in the kernel stops containerd with
// an error naming the erofs snapshotter, rather than serving layers
// unverified. Only where dm_verity is not loaded (the tests' hosts).
func TestErofsWithoutDmVerityStopsContainerd(t *testing.T) {
	if _, err := os.Stat("/sys/module/dm_verity"); err == nil {
		t.Skip("dm_verity is loaded here")
	}
	cfg := containerdtest.NewErofsConfig(t, t.TempDir())
	cfg.DmverityMode = "on"
	if err := cfg.WriteConfig(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, cfg.Binary, "--config", cfg.ConfigPath).CombinedOutput()
	var exit *exec.ExitError
	if ctx.Err() != nil || !errors.As(err, &exit) {
		t.Fatalf("containerd did not exit with an error (%v, %v):\n%s", err, ctx.Err(), out)
	}
	if last := lastLine(string(out)); !strings.Contains(last, "required plugin") || !strings.Contains(last, "io.containerd.snapshotter.v1.erofs") {
		t.Errorf("containerd exited (%v) without naming the erofs snapshotter; last line: %s", err, last)
	}
	if !strings.Contains(string(out), "dm_verity module not loaded") {
		t.Errorf("containerd's output does not say dm-verity is missing:\n%s", tail(string(out), 20))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// loadedPlugins starts the real containerd with cfg and returns the plugins
// it loaded without an error, as "type.id".
func loadedPlugins(t *testing.T, cfg containerd.Config) map[string]bool {
	t.Helper()
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
	return loaded
}
