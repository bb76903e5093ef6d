// Package kubelet runs the kubelet as a supervised child process of the
// appliance: it writes a KubeletConfiguration (Kubernetes' own v1beta1
// types) to a per-boot file, creates the directories the kubelet needs,
// starts /usr/bin/kubelet with supervisor.RunCommandLines so that its JSON
// log lines become structured zap entries, and signals Healthy once the
// kubelet's healthz endpoint answers.
//
// Standalone by default: the kubelet runs the static pods of ManifestDir
// against containerd's CRI, with no API server. A kubeconfig placed on the
// state disk (see Config.StateDir) makes the same runnable start a kubelet
// that joins a cluster.
//
// It must not open a port reachable from outside the machine in standalone
// mode, pull images (the pods' images are preseeded, imagePullPolicy Never),
// evict the appliance's static pods, or keep running when the kubelet has
// died: a dead kubelet is a failed runnable, and the supervisor restarts it
// with backoff.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/appliance-bundler/appliance/core/atomicfile"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/preseed/status"
	"github.com/appliance-bundler/appliance/core/supervisor"
)

// Defaults for the appliance; its static pod directory, state and runtime
// endpoint are the node's (core/node).
const (
	DefaultBinary = "/usr/bin/kubelet"
	// DefaultConfigPath is per boot (/run is a tmpfs): the init writes the
	// configuration anew at every start.
	DefaultConfigPath  = "/run/kubelet/config.yaml"
	DefaultPodLogsDir  = "/var/log/pods"
	DefaultResolvConf  = node.ResolvConf
	DefaultHealthzPort = 10248
	// DefaultPort is the kubelet's authenticated API port.
	DefaultPort = 10250
	// HealthReadOnlyPort is the read-only API's port on loopback, where
	// the updater (core/updater) reads the static pods' status before it
	// commits an update: standalone, nothing else serves it.
	HealthReadOnlyPort = 10255

	// Files in Config.StateDir that make the kubelet join a cluster.
	KubeconfigFile = "kubeconfig"
	ClientCAFile   = "ca.crt"

	// healthPoll is how often healthz is probed while the kubelet starts.
	healthPoll = 200 * time.Millisecond
	// healthTimeout bounds one probe.
	healthTimeout = 2 * time.Second
	// preseedPoll is how often the preseed status is read while waiting.
	preseedPoll = 100 * time.Millisecond
)

// Config says where the kubelet lives and what it serves. Zero fields take
// the defaults above; tests set every path into a temporary directory.
type Config struct {
	// Binary is the kubelet executable.
	Binary string
	// ConfigPath is where the KubeletConfiguration is written.
	ConfigPath string
	// StateDir is the kubelet's directory on the state disk, "" without a
	// state disk. When set it is the kubelet's root directory, and a
	// kubeconfig at StateDir/kubeconfig (with the cluster's client CA at
	// StateDir/ca.crt) makes the kubelet join that cluster.
	StateDir string
	// ManifestDir holds the static pods.
	ManifestDir string
	// PodLogsDir is where the kubelet (through the CRI) keeps pod logs.
	PodLogsDir string
	// RuntimeEndpoint is containerd's socket path.
	RuntimeEndpoint string
	// ResolvConf is the resolver configuration pods inherit; if the file
	// does not exist, pods get none ("").
	ResolvConf string
	// HealthzPort is the healthz port on loopback.
	HealthzPort int32
	// ReadOnlyPort is the unauthenticated read-only API on loopback
	// (HealthReadOnlyPort); 0 turns it off, and so does joining a
	// cluster, which listens on every address.
	ReadOnlyPort int32
	// WaitForPreseed makes the kubelet start only once preseed's status
	// file (PreseedStatus) says "done"; otherwise it starts as soon as
	// containerd is healthy and relies on its own retry for images that
	// are not imported yet.
	WaitForPreseed bool
	// PreseedStatus is preseed's status file.
	PreseedStatus string
}

func (c Config) withDefaults() Config {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.Binary, DefaultBinary)
	set(&c.ConfigPath, DefaultConfigPath)
	set(&c.ManifestDir, node.StaticPodDir)
	set(&c.PodLogsDir, DefaultPodLogsDir)
	set(&c.RuntimeEndpoint, node.ContainerdAddress)
	set(&c.ResolvConf, DefaultResolvConf)
	set(&c.PreseedStatus, status.DefaultPath)
	if c.HealthzPort == 0 {
		c.HealthzPort = DefaultHealthzPort
	}
	return c
}

// RootDir is the kubelet's --root-dir: on the state disk when there is
// one, else on tmpfs.
func (c Config) RootDir() string {
	if c.StateDir != "" {
		return c.StateDir
	}
	return node.KubeletRoot
}

// Kubeconfig returns the kubeconfig that makes the kubelet join a cluster,
// or "" when there is none (standalone).
func (c Config) Kubeconfig() string {
	if c.StateDir == "" {
		return ""
	}
	p := filepath.Join(c.StateDir, KubeconfigFile)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// Args are the kubelet's command-line arguments: only what the
// configuration file cannot say.
func (c Config) Args() []string {
	c = c.withDefaults()
	args := []string{"--config=" + c.ConfigPath, "--root-dir=" + c.RootDir()}
	if kc := c.Kubeconfig(); kc != "" {
		args = append(args, "--kubeconfig="+kc)
	}
	return args
}

// Dirs are the directories the kubelet needs before it starts.
func (c Config) Dirs() []string {
	c = c.withDefaults()
	return []string{c.RootDir(), c.PodLogsDir, c.ManifestDir, filepath.Dir(c.ConfigPath)}
}

// WriteConfig writes the configuration to c.ConfigPath, atomically.
func (c Config) WriteConfig() error {
	c = c.withDefaults()
	b, err := c.ConfigYAML()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.ConfigPath), 0o700); err != nil {
		return fmt.Errorf("failed to create directory of %s: %w", c.ConfigPath, err)
	}
	return atomicfile.Write(c.ConfigPath, b, 0o600)
}

// Command returns the command that runs the kubelet until ctx ends.
func (c Config) Command(ctx context.Context) *exec.Cmd {
	c = c.withDefaults()
	return exec.CommandContext(ctx, c.Binary, c.Args()...)
}

// Run is the kubelet runnable. It never signals Done: the kubelet serves
// for the life of the appliance, and its exit is a failure.
func (c Config) Run(ctx context.Context) error {
	c = c.withDefaults()
	logger := supervisor.Logger(ctx)
	if c.WaitForPreseed {
		start := time.Now()
		if err := waitPreseed(ctx, c.PreseedStatus); err != nil {
			return err
		}
		logger.Info("preseed done; starting the kubelet", zap.Duration("waited", time.Since(start)))
	}
	for _, d := range c.Dirs() {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("failed to create %s: %w", d, err)
		}
	}
	if err := c.WriteConfig(); err != nil {
		return err
	}
	kubeconfig := c.Kubeconfig()
	logger.Info("starting the kubelet", zap.String("config", c.ConfigPath),
		zap.String("root_dir", c.RootDir()), zap.Bool("standalone", kubeconfig == ""),
		zap.String("kubeconfig", kubeconfig))

	exited := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- supervisor.RunCommandLines(ctx, c.Command(ctx), LogLine)
		close(exited)
	}()
	start := time.Now()
	if err := waitHealthy(ctx, c.HealthzPort, exited); err != nil {
		if runErr := <-done; runErr != nil {
			err = fmt.Errorf("%w; %w", err, runErr)
		}
		return fmt.Errorf("failed to start the kubelet: %w", err)
	}
	logger.Info("kubelet healthy", zap.Duration("startup", time.Since(start)))
	supervisor.Signal(ctx, supervisor.SignalHealthy)
	err := <-done
	if err == nil {
		err = errors.New("exited with status 0")
	}
	return fmt.Errorf("kubelet died: %w", err)
}

// waitPreseed polls preseed's status file until it says "done".
func waitPreseed(ctx context.Context, path string) error {
	t := time.NewTicker(preseedPoll)
	defer t.Stop()
	for {
		// Absent or half written (it is replaced whole): not done yet.
		if st, err := status.Read(path); err == nil && st.State == status.StateDone {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for preseed's status %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
}

// waitHealthy polls the kubelet's healthz on loopback until it answers 200,
// ctx ends, or exited is closed.
func waitHealthy(ctx context.Context, port int32, exited <-chan struct{}) error {
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))) + "/healthz"
	client := &http.Client{Timeout: healthTimeout}
	t := time.NewTicker(healthPoll)
	defer t.Stop()
	var last error
	for {
		if last = probe(ctx, client, url); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubelet healthz %s not ready (last error: %v): %w", url, last, ctx.Err())
		case <-exited:
			return fmt.Errorf("kubelet exited before %s answered (last error: %w)", url, last)
		case <-t.C:
		}
	}
}

func probe(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}
