package kubelet

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // the kubelet's json log format, as cmd/kubelet registers it
	_ "k8s.io/kubernetes/pkg/features"           // registers the kubelet's feature gates, as cmd/kubelet does
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	kubeletscheme "k8s.io/kubernetes/pkg/kubelet/apis/config/scheme"
	"k8s.io/kubernetes/pkg/kubelet/apis/config/validation"

	"github.com/appliance-bundler/appliance/core/node"
)

// TestMain registers the logging feature gates in the default gate, as
// cmd/kubelet does before it validates its configuration.
func TestMain(m *testing.M) {
	if err := logsapi.AddFeatureGates(utilfeature.DefaultMutableFeatureGate); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

// testConfig puts every path of the runnable into a temporary directory.
func testConfig(t *testing.T) Config {
	t.Helper()
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 10.0.2.3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return Config{
		ConfigPath:    filepath.Join(dir, "run", "kubelet", "config.yaml"),
		ManifestDir:   filepath.Join(dir, "manifests"),
		PodLogsDir:    filepath.Join(dir, "pods"),
		ResolvConf:    resolv,
		PreseedStatus: filepath.Join(dir, "status.json"),
	}
}

// load writes c's configuration file and reads it back as the kubelet does
// (its own scheme, strict: an unknown or misspelt field fails), then runs
// the kubelet's own validation on it.
func load(t *testing.T, c Config) *kubeletconfig.KubeletConfiguration {
	t.Helper()
	if err := c.WriteConfig(); err != nil {
		t.Fatalf("WriteConfig: %v", err)
	}
	data, err := os.ReadFile(c.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	_, codecs, err := kubeletscheme.NewSchemeAndCodecs(serializer.EnableStrict)
	if err != nil {
		t.Fatal(err)
	}
	obj, _, err := codecs.UniversalDecoder().Decode(data, nil, nil)
	if err != nil {
		t.Fatalf("the kubelet's strict decoder refuses %s: %v\n%s", c.ConfigPath, err, data)
	}
	kc, ok := obj.(*kubeletconfig.KubeletConfiguration)
	if !ok {
		t.Fatalf("decoded %T, want *KubeletConfiguration", obj)
	}
	if !kc.FailCgroupV1 {
		t.Errorf("failCgroupV1 is off, want on: the appliance runs cgroup v2 only")
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
		// The validation checks this host's cgroups, not the appliance's.
		t.Logf("this host has no cgroup v2; validating with failCgroupV1 off")
		kc.FailCgroupV1 = false
	}
	if err := validation.ValidateKubeletConfiguration(kc, utilfeature.DefaultFeatureGate); err != nil {
		t.Fatalf("the kubelet's validation refuses %s: %v\n%s", c.ConfigPath, err, data)
	}
	return kc
}

// checkLocked asserts what holds in every standalone configuration: nothing
// listens beyond loopback, and nothing authenticates.
func checkLocked(t *testing.T, kc *kubeletconfig.KubeletConfiguration) {
	t.Helper()
	// A container whose pod names no seccomp profile runs under the
	// runtime's default one, not unconfined.
	if !kc.SeccompDefault {
		t.Errorf("seccompDefault %v, want true", kc.SeccompDefault)
	}
	if kc.Address != Loopback || kc.HealthzBindAddress != Loopback {
		t.Errorf("address %q, healthz %q, want both %s", kc.Address, kc.HealthzBindAddress, Loopback)
	}
	if kc.Authentication.Anonymous.Enabled ||
		kc.Authentication.Webhook.Enabled || kc.Authentication.X509.ClientCAFile != "" {
		t.Errorf("authentication %+v, want anonymous, webhook and x509 all off", kc.Authentication)
	}
	if kc.Authorization.Mode != kubeletconfig.KubeletAuthorizationModeAlwaysAllow {
		t.Errorf("authorization mode %q, want AlwaysAllow (webhook needs a client)", kc.Authorization.Mode)
	}
}

func TestProductionConfig(t *testing.T) {
	c := testConfig(t)
	kc := load(t, c)
	checkLocked(t, kc)
	if kc.ReadOnlyPort != 0 {
		t.Errorf("readOnlyPort %d, want 0 (off)", kc.ReadOnlyPort)
	}
	if kc.Port != DefaultPort || kc.HealthzPort != DefaultHealthzPort {
		t.Errorf("port %d, healthz port %d, want %d, %d", kc.Port, kc.HealthzPort, DefaultPort, DefaultHealthzPort)
	}
	// Everything the kubelet writes is below its root dir: the
	// appliance's root is read-only.
	if want := filepath.Join(c.RootDir(), "volume-plugins"); kc.VolumePluginDir != want {
		t.Errorf("volumePluginDir %q, want %q (the default is under /usr)", kc.VolumePluginDir, want)
	}
	if kc.StaticPodPath != c.ManifestDir || kc.PodLogsDir != c.PodLogsDir {
		t.Errorf("staticPodPath %q, podLogsDir %q, want %q, %q", kc.StaticPodPath, kc.PodLogsDir, c.ManifestDir, c.PodLogsDir)
	}
	if want := "unix:///run/containerd/containerd.sock"; kc.ContainerRuntimeEndpoint != want || kc.ImageServiceEndpoint != "" {
		t.Errorf("runtime endpoint %q, image endpoint %q, want %q and the same (empty)", kc.ContainerRuntimeEndpoint, kc.ImageServiceEndpoint, want)
	}
	if kc.FailSwapOn || kc.CgroupDriver != "cgroupfs" || kc.Logging.Format != "json" || kc.ResolverConfig != c.ResolvConf {
		t.Errorf("failSwapOn %v, cgroupDriver %q, logging %q, resolvConf %q", kc.FailSwapOn, kc.CgroupDriver, kc.Logging.Format, kc.ResolverConfig)
	}
	// On tmpfs only memory pressure evicts.
	want := map[string]string{"memory.available": MemoryEvictionThreshold, "nodefs.available": "0%",
		"nodefs.inodesFree": "0%", "imagefs.available": "0%", "imagefs.inodesFree": "0%"}
	if len(kc.EvictionHard) != len(want) {
		t.Errorf("evictionHard %v, want %v", kc.EvictionHard, want)
	}
	for k, v := range want {
		if kc.EvictionHard[k] != v {
			t.Errorf("evictionHard[%s] = %q, want %q", k, kc.EvictionHard[k], v)
		}
	}
	args := c.Args()
	if want := []string{"--config=" + c.ConfigPath, "--root-dir=" + node.KubeletRoot}; !slices.Equal(args, want) {
		t.Errorf("args %q, want %q", args, want)
	}
}

// The E2E variant's configuration is production's with only readOnlyPort
// set, still on loopback.
func TestE2EConfigDiffersOnlyInReadOnlyPort(t *testing.T) {
	prod := testConfig(t)
	e2e := prod
	e2e.ReadOnlyPort = 10255
	kc := load(t, e2e)
	checkLocked(t, kc)
	if kc.ReadOnlyPort != 10255 {
		t.Errorf("readOnlyPort %d, want 10255", kc.ReadOnlyPort)
	}
	a, err := prod.ConfigYAML()
	if err != nil {
		t.Fatal(err)
	}
	b, err := e2e.ConfigYAML()
	if err != nil {
		t.Fatal(err)
	}
	var diff []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(string(a), l+"\n") {
			diff = append(diff, l)
		}
	}
	if len(diff) != 1 || diff[0] != "readOnlyPort: 10255" || len(a)+len("readOnlyPort: 10255\n") != len(b) {
		t.Errorf("E2E config adds %q to production's, want only readOnlyPort: 10255\nproduction:\n%s\nE2E:\n%s", diff, a, b)
	}
}

// A state disk without a kubeconfig: standalone, state on the disk, the
// kubelet's own eviction defaults.
func TestStateDiskStandaloneConfig(t *testing.T) {
	c := testConfig(t)
	c.StateDir = t.TempDir()
	kc := load(t, c)
	checkLocked(t, kc)
	// Unset: cmd/kubelet then applies its DefaultEvictionHard.
	if kc.EvictionHard != nil {
		t.Errorf("evictionHard %v, want unset (the kubelet's defaults)", kc.EvictionHard)
	}
	if want := []string{"--config=" + c.ConfigPath, "--root-dir=" + c.StateDir}; !slices.Equal(c.Args(), want) {
		t.Errorf("args %q, want %q", c.Args(), want)
	}
}

// A kubeconfig (and the cluster's CA) on the state disk makes the same
// runnable start a kubelet that joins the cluster, which authenticates and
// authorizes each request.
func TestKubeconfigJoinsCluster(t *testing.T) {
	c := testConfig(t)
	c.StateDir = t.TempDir()
	c.ReadOnlyPort = HealthReadOnlyPort // forced off: it would listen on every address
	kubeconfig := filepath.Join(c.StateDir, KubeconfigFile)
	ca := filepath.Join(c.StateDir, ClientCAFile)
	for _, f := range []string{kubeconfig, ca} {
		if err := os.WriteFile(f, []byte("placeholder\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kc := load(t, c)
	if !kc.Authentication.Webhook.Enabled || kc.Authorization.Mode != kubeletconfig.KubeletAuthorizationModeWebhook {
		t.Errorf("authentication webhook %v, authorization %q, want on and Webhook", kc.Authentication.Webhook.Enabled, kc.Authorization.Mode)
	}
	if kc.Authentication.X509.ClientCAFile != ca || kc.Authentication.Anonymous.Enabled {
		t.Errorf("clientCAFile %q, anonymous %v, want %q and off", kc.Authentication.X509.ClientCAFile, kc.Authentication.Anonymous.Enabled, ca)
	}
	if kc.Address != "0.0.0.0" || kc.HealthzBindAddress != Loopback || kc.ReadOnlyPort != 0 {
		t.Errorf("address %q, healthz %q, readOnlyPort %d, want 0.0.0.0, loopback, 0", kc.Address, kc.HealthzBindAddress, kc.ReadOnlyPort)
	}
	want := []string{"--config=" + c.ConfigPath, "--root-dir=" + c.StateDir, "--kubeconfig=" + kubeconfig}
	if !slices.Equal(c.Args(), want) {
		t.Errorf("args %q, want %q", c.Args(), want)
	}
	// Without the CA the kubelet still joins; it only accepts tokens then.
	if err := os.Remove(ca); err != nil {
		t.Fatal(err)
	}
	if kc := load(t, c); kc.Authentication.X509.ClientCAFile != "" {
		t.Errorf("clientCAFile %q with no CA file, want empty", kc.Authentication.X509.ClientCAFile)
	}
}

// A resolver file that does not exist is not given to the kubelet.
func TestMissingResolvConf(t *testing.T) {
	c := testConfig(t)
	c.ResolvConf = filepath.Join(t.TempDir(), "absent")
	if kc := load(t, c); kc.ResolverConfig != "" {
		t.Errorf("resolvConf %q, want empty for a missing file", kc.ResolverConfig)
	}
}

// waitPreseed returns only once the status says done, and with ctx's error
// when it ends first.
func TestWaitPreseed(t *testing.T) {
	c := testConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*preseedPoll)
	defer cancel()
	if err := waitPreseed(ctx, c.PreseedStatus); err == nil {
		t.Fatal("waitPreseed returned nil with no status file")
	}
	if err := os.WriteFile(c.PreseedStatus, []byte(`{"state":"running"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- waitPreseed(context.Background(), c.PreseedStatus) }()
	select {
	case err := <-done:
		t.Fatalf("waitPreseed returned %v before the status said done", err)
	case <-time.After(3 * preseedPoll):
	}
	if err := os.WriteFile(c.PreseedStatus, []byte(`{"state":"done","imported":2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("waitPreseed = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waitPreseed did not return once the status said done")
	}
}
