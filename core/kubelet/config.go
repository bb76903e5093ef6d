package kubelet

import (
	"fmt"
	"os"
	"path/filepath"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"
)

// Loopback is where the kubelet listens in standalone mode: nothing outside
// the machine can reach it.
const Loopback = "127.0.0.1"

// cgroupFallbackDriver is used only by a CRI that cannot report its driver:
// kubelet 1.37 takes the driver from containerd's RuntimeConfig (feature
// KubeletCgroupDriverFromCRI, GA and locked on since 1.34). The appliance
// has no systemd, so containerd's runc uses cgroupfs.
const cgroupFallbackDriver = "cgroupfs"

// MemoryEvictionThreshold is the one hard eviction threshold on tmpfs.
const MemoryEvictionThreshold = "100Mi"

func ptr[T any](v T) *T { return &v }

// KubeletConfiguration returns the configuration the kubelet is given.
func (c Config) KubeletConfiguration() *kubeletv1beta1.KubeletConfiguration {
	c = c.withDefaults()
	kc := &kubeletv1beta1.KubeletConfiguration{
		TypeMeta: metav1.TypeMeta{
			APIVersion: kubeletv1beta1.SchemeGroupVersion.String(),
			Kind:       "KubeletConfiguration",
		},
		StaticPodPath: c.ManifestDir,
		// FlexVolume plugins: none, but the kubelet makes the directory,
		// which by default is under /usr, read-only on the appliance.
		VolumePluginDir:          filepath.Join(c.RootDir(), "volume-plugins"),
		PodLogsDir:               c.PodLogsDir,
		ContainerRuntimeEndpoint: "unix://" + c.RuntimeEndpoint,
		CgroupDriver:             cgroupFallbackDriver,
		// The appliance mounts cgroup2 only (core/init).
		FailCgroupV1: ptr(true),
		// The appliance has no swap; a host that adds some must not stop
		// the kubelet from starting.
		FailSwapOn: ptr(false),
		// Every container gets the runtime's default seccomp profile
		// unless its pod asks for another: unconfined is never implied.
		SeccompDefault:     ptr(true),
		Address:            Loopback,
		Port:               DefaultPort,
		ReadOnlyPort:       c.ReadOnlyPort,
		HealthzBindAddress: Loopback,
		HealthzPort:        ptr(c.HealthzPort),
		ResolverConfig:     ptr(c.resolvConf()),
		EvictionHard:       c.evictionHard(),
		Authentication: kubeletv1beta1.KubeletAuthentication{
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: ptr(false)},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: ptr(false)},
		},
		// Standalone there is no API server, and the kubelet refuses to
		// start with Webhook authorization and no client ("no client
		// provided, cannot use webhook authorization"). AlwaysAllow is
		// safe here because nothing can authenticate: anonymous and
		// webhook authentication are off and there is no client CA, so
		// every request to the port is refused with 401 before
		// authorization is asked.
		Authorization: kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeAlwaysAllow},
	}
	kc.Logging.Format = "json"
	if c.Kubeconfig() != "" {
		// Joining a cluster: the API server must reach the kubelet's port
		// (logs, exec, metrics), and the cluster authenticates and
		// authorizes every request (TokenReview, SubjectAccessReview).
		kc.Address = "0.0.0.0"
		// The read-only port would listen there too, unauthenticated.
		kc.ReadOnlyPort = 0
		kc.Authentication.Webhook.Enabled = ptr(true)
		kc.Authorization.Mode = kubeletv1beta1.KubeletAuthorizationModeWebhook
		if ca := filepath.Join(c.StateDir, ClientCAFile); exists(ca) {
			kc.Authentication.X509.ClientCAFile = ca
		}
	}
	return kc
}

// evictionHard chooses the hard eviction thresholds. With a state disk the
// kubelet's defaults hold: disk pressure there is real and freeing space
// helps. Without one, the kubelet's and containerd's files are on the /var
// tmpfs, mostly preseeded images that are pinned and cannot be freed, so a
// disk threshold would only evict pods without relieving anything; tmpfs
// pages are memory, which memory.available already watches. "0%" is how a
// threshold is turned off, and every signal is listed because a partial map
// leaves the kubelet's defaults out. (Static pods are critical pods, which
// the kubelet never evicts; this keeps any other pod too.)
func (c Config) evictionHard() map[string]string {
	if c.StateDir != "" {
		return nil
	}
	return map[string]string{
		"memory.available":   MemoryEvictionThreshold,
		"nodefs.available":   "0%",
		"nodefs.inodesFree":  "0%",
		"imagefs.available":  "0%",
		"imagefs.inodesFree": "0%",
	}
}

// resolvConf is the resolver file pods inherit if it exists, else "" (none):
// the kubelet would log an error for a missing file at every pod.
func (c Config) resolvConf() string {
	if exists(c.ResolvConf) {
		return c.ResolvConf
	}
	return ""
}

// ConfigYAML renders the configuration as YAML, through its JSON tags as
// Kubernetes does.
func (c Config) ConfigYAML() ([]byte, error) {
	b, err := yaml.Marshal(c.KubeletConfiguration())
	if err != nil {
		return nil, fmt.Errorf("failed to encode the KubeletConfiguration: %w", err)
	}
	return b, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
