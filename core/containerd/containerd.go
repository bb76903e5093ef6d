// Package containerd runs containerd as a supervised child process of the
// appliance: it writes containerd's configuration, starts the binary with
// supervisor.RunCommand, signals Healthy once the API answers on its socket,
// and starts the runnables that need containerd (preseed) as its children, so
// they are cancelled and restarted together with it.
//
// The CRI's snapshotter is erofs by default: layers are EROFS blobs, served
// straight from the appliance's layer content cache (core/erofscache) when
// the build converted them, else converted on the node by containerd's
// erofs differ (mkfs.erofs, which containerd finds on the PATH it is given);
// node.DmverityMode says which of them mount through dm-verity. overlayfs
// stays configurable (the preseed bench compares the two).
//
// It must not talk to any registry, import images itself, or keep running
// when containerd has died: a dead containerd is a failed runnable, and the
// supervisor restarts it.
package containerd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/containerd/containerd/v2/client"
	"github.com/pelletier/go-toml/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/appliance-bundler/appliance/core/atomicfile"
	"github.com/appliance-bundler/appliance/core/childlog"
	"github.com/appliance-bundler/appliance/core/erofscache"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/supervisor"
)

// Defaults for the appliance; its paths, snapshotter and dm-verity mode are
// the node's (core/node).
const (
	DefaultBinary = "/usr/bin/containerd"

	// basePath are the directories containerd's PATH must hold: the erofs
	// differ runs mkfs.erofs (the appliance ships /usr/bin/mkfs.erofs), and
	// the kernel starts init without any PATH.
	basePath = "/usr/sbin:/usr/bin:/sbin:/bin"

	// readyPoll is how often the socket is probed while containerd starts.
	readyPoll = 50 * time.Millisecond
	// readyTimeout bounds one probe of the API.
	readyTimeout = 2 * time.Second
	// childrenStopWait bounds how long a stopping containerd waits for its
	// children to stop first: longer than RunCommand's grace between
	// SIGTERM and SIGKILL, so that the kubelet is gone by then.
	childrenStopWait = 15 * time.Second
)

// DefaultDisabledPlugins are the snapshotters the appliance does not use.
// A snapshotter that fails to start (btrfs cannot find its mount, say)
// takes containerd's metadata plugin, and so the CRI, down with it. The
// opt plugin (managed binaries under /opt/containerd) is not used either,
// and would create its directory on a root that is read-only.
// A function, not a variable: callers get their own slice to extend.
func DefaultDisabledPlugins() []string {
	return []string{
		"io.containerd.snapshotter.v1.btrfs",
		"io.containerd.snapshotter.v1.zfs",
		"io.containerd.snapshotter.v1.devmapper",
		"io.containerd.snapshotter.v1.blockfile",
		"io.containerd.internal.v1.opt",
	}
}

// Config says where containerd lives and what it serves. Zero fields take the
// defaults above; tests set every path into a temporary directory.
type Config struct {
	// Binary is the containerd executable.
	Binary string
	// Root and State are containerd's persistent and runtime directories.
	Root, State string
	// Address is the path of the gRPC socket.
	Address string
	// ConfigPath is where the generated config.toml is written.
	ConfigPath string
	// Snapshotter is the snapshotter of the CRI plugin and of unpacks through
	// the transfer service: preseeded images must be unpacked into it.
	Snapshotter string
	// SandboxImage is the preseeded pod sandbox (pause) image, by its full
	// name; the CRI plugin pins it. Empty leaves the CRI default.
	SandboxImage string
	// DisabledPlugins are plugin IDs containerd must not load; nil means
	// DefaultDisabledPlugins.
	DisabledPlugins []string
	// LayerContentCaches are the erofs snapshotter's directories of
	// pre-built EROFS layers; nil means erofscache.Root. Only with the erofs
	// snapshotter.
	LayerContentCaches []string
	// DmverityMode is the erofs snapshotter's dmverity_mode ("on", "auto" or
	// "off"); empty means node.DmverityMode. The erofs differ formats the
	// layers it converts with dm-verity unless it is "off" (which needs no
	// dm_verity module: the tests' hosts have none).
	DmverityMode string
	// Children are started under the containerd runnable once the API
	// answers, each as a group of its own: they are cancelled and
	// restarted whenever containerd is, and one that fails restarts alone.
	Children map[string]supervisor.Runnable
}

func (c Config) withDefaults() Config {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.Binary, DefaultBinary)
	set(&c.Root, node.ContainerdRoot)
	set(&c.State, node.ContainerdState)
	set(&c.Address, node.ContainerdAddress)
	set(&c.ConfigPath, node.ContainerdConfig)
	set(&c.Snapshotter, node.Snapshotter)
	set(&c.DmverityMode, node.DmverityMode)
	if c.DisabledPlugins == nil {
		c.DisabledPlugins = DefaultDisabledPlugins()
	}
	if c.LayerContentCaches == nil {
		c.LayerContentCaches = []string{erofscache.Root}
	}
	return c
}

// RequiredPlugins are the plugins containerd must load or refuse to start:
// the CRI's gRPC service and the image and runtime services it is built on.
// Without them the node serves no pods, and a containerd that runs on
// without them only hides why.
func RequiredPlugins() []string {
	return []string{
		"io.containerd.grpc.v1.cri",
		"io.containerd.cri.v1.images",
		"io.containerd.cri.v1.runtime",
	}
}

// ErofsPlugins are the plugins the erofs path needs on top of
// RequiredPlugins: the snapshotter, the differ that converts layers the
// cache lacks, and the mount handler (under the mount manager) that sets
// up a layer's dm-verity device. Each fails to load without its kernel
// support (erofs, dm_verity) or mkfs.erofs: containerd then refuses to
// start, naming it, instead of serving no pods.
func ErofsPlugins() []string {
	return []string{
		"io.containerd.snapshotter.v1.erofs",
		"io.containerd.differ.v1.erofs",
		"io.containerd.mount-handler.v1.erofs",
		"io.containerd.mount-manager.v1.bolt",
	}
}

// Required lists the plugins this configuration makes containerd require.
func (c Config) Required() []string {
	if c.withDefaults().Snapshotter == node.ErofsSnapshotter {
		return append(RequiredPlugins(), ErofsPlugins()...)
	}
	return RequiredPlugins()
}

// tomlConfig is the part of containerd's configuration (format version 3,
// the one of containerd 2.x) the appliance sets; containerd defaults the rest.
type tomlConfig struct {
	Version         int         `toml:"version"`
	Root            string      `toml:"root"`
	State           string      `toml:"state"`
	DisabledPlugins []string    `toml:"disabled_plugins,omitempty"`
	RequiredPlugins []string    `toml:"required_plugins"`
	GRPC            grpcConfig  `toml:"grpc"`
	Debug           debugConfig `toml:"debug"`
	Plugins         pluginsTOML `toml:"plugins"`
}

// debugConfig makes containerd log JSON lines, which LogLine turns into
// init's own entries (childlog) instead of escaping text inside them.
type debugConfig struct {
	Format string `toml:"format"`
}

// grpcConfig sets only the socket: the ttrpc socket defaults to
// Address+".ttrpc", and there are no debug or metrics listeners because
// nothing else on the appliance needs them.
type grpcConfig struct {
	Address string `toml:"address"`
}

type pluginsTOML struct {
	CRIImages criImagesConfig `toml:"io.containerd.cri.v1.images"`
	Transfer  transferConfig  `toml:"io.containerd.transfer.v1.local"`
	// The erofs sections are written only with the erofs snapshotter: a
	// diff service whose default names an unloaded differ fails, and takes
	// every plugin built on it down.
	ErofsSnapshotter *erofsSnapshotterConfig `toml:"io.containerd.snapshotter.v1.erofs,omitempty"`
	ErofsDiffer      *erofsDifferConfig      `toml:"io.containerd.differ.v1.erofs,omitempty"`
	DiffService      *diffServiceConfig      `toml:"io.containerd.service.v1.diff-service,omitempty"`
}

// erofsSnapshotterConfig serves the cached layers read-only, without
// conversion (see core/erofscache).
type erofsSnapshotterConfig struct {
	LayerContentCaches []string `toml:"layer_content_caches"`
	DmverityMode       string   `toml:"dmverity_mode"`
}

// erofsDifferConfig converts the layers the cache lacks; -T0 and
// --mkfs-time make its blobs independent of the clock.
type erofsDifferConfig struct {
	EnableDmverity bool     `toml:"enable_dmverity"`
	MkfsOptions    []string `toml:"mkfs_options"`
}

// diffServiceConfig orders the differs: erofs for erofs mounts, walking
// for the rest (it applies onto a directory).
type diffServiceConfig struct {
	Default []string `toml:"default"`
}

type criImagesConfig struct {
	Snapshotter  string        `toml:"snapshotter"`
	PinnedImages *pinnedImages `toml:"pinned_images,omitempty"`
}

type pinnedImages struct {
	Sandbox string `toml:"sandbox"`
}

// transferConfig sends unpacks through the transfer service (ctr images
// import, CRI pulls) to the same snapshotter as the CRI's.
type transferConfig struct {
	UnpackConfig []unpackConfig `toml:"unpack_config"`
}

type unpackConfig struct {
	Platform    string `toml:"platform"`
	Snapshotter string `toml:"snapshotter"`
}

// toml returns the typed configuration containerd is given.
func (c Config) toml() tomlConfig {
	c = c.withDefaults()
	t := tomlConfig{
		Version:         3,
		Root:            c.Root,
		State:           c.State,
		DisabledPlugins: c.DisabledPlugins,
		RequiredPlugins: c.Required(),
		GRPC:            grpcConfig{Address: c.Address},
		Debug:           debugConfig{Format: "json"},
		Plugins: pluginsTOML{
			CRIImages: criImagesConfig{Snapshotter: c.Snapshotter},
			Transfer: transferConfig{UnpackConfig: []unpackConfig{
				{Platform: runtime.GOOS + "/" + runtime.GOARCH, Snapshotter: c.Snapshotter},
			}},
		},
	}
	if c.SandboxImage != "" {
		t.Plugins.CRIImages.PinnedImages = &pinnedImages{Sandbox: c.SandboxImage}
	}
	if c.Snapshotter == node.ErofsSnapshotter {
		t.Plugins.ErofsSnapshotter = &erofsSnapshotterConfig{
			LayerContentCaches: c.LayerContentCaches,
			DmverityMode:       c.DmverityMode,
		}
		t.Plugins.ErofsDiffer = &erofsDifferConfig{
			EnableDmverity: c.DmverityMode != "off",
			MkfsOptions:    node.ErofsMkfsOptions(),
		}
		t.Plugins.DiffService = &diffServiceConfig{Default: []string{"erofs", "walking"}}
	}
	return t
}

// ConfigTOML renders containerd's configuration with the TOML library
// containerd itself parses it with.
func (c Config) ConfigTOML() ([]byte, error) {
	t := c.toml()
	// TOML holds only UTF-8 text; the encoder would write other bytes as
	// they are, into a file containerd then refuses.
	for name, v := range map[string]string{
		"root": t.Root, "state": t.State, "address": t.GRPC.Address,
		"snapshotter": c.Snapshotter, "sandbox image": c.SandboxImage,
		"layer content caches": strings.Join(c.LayerContentCaches, ", "), "dm-verity mode": c.DmverityMode,
	} {
		if !utf8.ValidString(v) {
			return nil, fmt.Errorf("containerd's %s %q is not valid UTF-8, which TOML cannot hold", name, v)
		}
	}
	b, err := toml.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("failed to encode containerd's configuration as TOML: %w", err)
	}
	return b, nil
}

// WriteConfig writes the configuration to c.ConfigPath.
func (c Config) WriteConfig() error {
	c = c.withDefaults()
	if err := os.MkdirAll(filepath.Dir(c.ConfigPath), 0o700); err != nil {
		return fmt.Errorf("failed to create directory of %s: %w", c.ConfigPath, err)
	}
	b, err := c.ConfigTOML()
	if err != nil {
		return fmt.Errorf("failed to write %s: %w", c.ConfigPath, err)
	}
	return atomicfile.Write(c.ConfigPath, b, 0o600)
}

// Command returns the command that runs containerd with the written
// configuration until ctx ends (how it is stopped then is the caller's
// choice: supervisor.RunCommand sends SIGTERM, then SIGKILL).
func (c Config) Command(ctx context.Context) *exec.Cmd {
	c = c.withDefaults()
	cmd := exec.CommandContext(ctx, c.Binary, "--config", c.ConfigPath)
	cmd.Env = commandEnv(os.Environ())
	return cmd
}

// commandEnv is env with a PATH that holds basePath's directories: the
// inherited PATH first (a test's tools), then those it lacks.
func commandEnv(env []string) []string {
	var path []string
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = filepath.SplitList(v)
			continue
		}
		out = append(out, kv)
	}
	for _, d := range filepath.SplitList(basePath) {
		if !slices.Contains(path, d) {
			path = append(path, d)
		}
	}
	return append(out, "PATH="+strings.Join(path, string(filepath.ListSeparator)))
}

// WaitReady polls the socket until containerd's API answers, ctx ends, or
// exited is closed (the process died first).
func WaitReady(ctx context.Context, address string, exited <-chan struct{}) error {
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	var last error
	for {
		if last = probe(ctx, address); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("containerd at %s not ready (last error: %v): %w", address, last, ctx.Err())
		case <-exited:
			return fmt.Errorf("containerd exited before %s was ready (last error: %w)", address, last)
		case <-t.C:
		}
	}
}

func probe(ctx context.Context, address string) error {
	if _, err := os.Stat(address); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	c, err := client.New(address, client.WithTimeout(readyTimeout))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Version(ctx)
	return err
}

// LogLine is the supervisor.LineFunc for containerd's output: its JSON
// lines (logrus's: level, msg, time and key/values) become entries at the
// line's level with its message, every other key/value under
// "containerd".
func LogLine(logger *zap.Logger, stream string, line []byte) {
	childlog.Format{
		Namespace:  "containerd",
		MessageKey: "msg",
		Drop:       []string{"time", "level"},
		Level:      childlog.Lowered(childlog.LevelKey("level"), "error", BenignErrors()),
	}.LineFunc()(logger, stream, line)
}

// BenignErrors are the errors containerd logs about a container that
// exited, while it shuts down, or when the machine is so busy that its
// calls to a shim time out: read off boots under load, each is logged as a warning instead, so
// that it still shows but the console shows an error only when there is
// one. An explicit list: any other error keeps its level.
func BenignErrors() []childlog.Benign {
	warn := zapcore.WarnLevel
	return []childlog.Benign{
		// The CRI's metrics of a container whose task just ended.
		{Msg: "collecting metrics for ", Err: "ttrpc: closed", Level: warn},
		// A reply from a shim after the call gave up: a busy machine.
		{Msg: "ttrpc: received message on inactive stream", Err: "", Level: warn},
		// Any of containerd's own calls that ran out of its deadline (to
		// delete an exited container's task or shim, say): a busy
		// machine, whose calls containerd makes again.
		{Msg: "", Err: "context deadline exceeded", Level: warn},
		// The CRI handling a container's exit while containerd shuts down
		// (power-off): its database is already closed, and the next start
		// loads the task's state again. Seen on a production boot under a
		// cold CI run.
		{Msg: "failed to handle container TaskExit event ", Err: "database not open", Level: warn},
		// The same exit handled as far as reading the container's spec,
		// from the closed database. Seen on a production boot with two
		// VMs on the machine's two cores.
		{Msg: "failed to get OCI Spec for container ", Err: "database not open", Level: warn},
	}
}

// counted is run, counted in active while it runs.
func counted(active *atomic.Int32, run supervisor.Runnable) supervisor.Runnable {
	return func(ctx context.Context) error {
		active.Add(1)
		defer active.Add(-1)
		return run(ctx)
	}
}

// waitChildren waits until no child runs, or for at most bound: a child
// that does not stop must not keep containerd from stopping.
func waitChildren(active *atomic.Int32, bound time.Duration) {
	for deadline := time.Now().Add(bound); active.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(readyPoll)
	}
}

// Run is the containerd runnable. It never signals Done: containerd serves
// for the life of the appliance, and its exit is a failure.
func (c Config) Run(ctx context.Context) error {
	c = c.withDefaults()
	logger := supervisor.Logger(ctx)
	for _, d := range []string{c.Root, c.State, filepath.Dir(c.Address)} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return fmt.Errorf("failed to create %s: %w", d, err)
		}
	}
	if err := c.WriteConfig(); err != nil {
		return err
	}
	// A socket left by a containerd that died would make WaitReady dial a
	// dead listener; containerd itself replaces it, but only once it gets there.
	if err := os.Remove(c.Address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove stale socket %s: %w", c.Address, err)
	}

	// containerd's own context: Run ends it and waits for the process on
	// every way out, so a run never returns with containerd still alive
	// (the next run would start a second one on the same root). When the
	// run's context ends (the tree stops), containerd is stopped only once
	// its children have: the kubelet and preseed talk to it until they
	// exit, and would log its going away as errors.
	cctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	var active atomic.Int32
	stopAfterChildren := context.AfterFunc(ctx, func() {
		waitChildren(&active, childrenStopWait)
		stop()
	})
	defer stopAfterChildren()
	exited := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- supervisor.RunCommandLines(cctx, c.Command(cctx), LogLine)
		close(exited)
	}()

	start := time.Now()
	if err := WaitReady(ctx, c.Address, exited); err != nil {
		stop()
		// The process's own end, if any, says why it never got ready.
		if runErr := <-done; runErr != nil {
			err = fmt.Errorf("%w; %w", err, runErr)
		}
		return fmt.Errorf("failed to start containerd: %w", err)
	}
	logger.Info("containerd ready", zap.String("address", c.Address),
		zap.String("snapshotter", c.Snapshotter), zap.Duration("startup", time.Since(start)))
	supervisor.Signal(ctx, supervisor.SignalHealthy)
	// Each child is a group of its own: one that fails (preseed, say)
	// restarts alone, and never takes a sibling (the kubelet) with it.
	for _, name := range slices.Sorted(maps.Keys(c.Children)) {
		if err := supervisor.Run(ctx, name, counted(&active, c.Children[name])); err != nil {
			stop()
			<-done
			return fmt.Errorf("failed to start %s under containerd: %w", name, err)
		}
	}
	err := <-done
	if err == nil {
		err = errors.New("exited with status 0")
	}
	return fmt.Errorf("containerd died: %w", err)
}
