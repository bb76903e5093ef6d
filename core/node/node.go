// Package node holds the settings of the appliance node that more than one
// of its parts must agree on: where containerd lives and listens, the
// snapshotter that serves preseeded images, dm-verity's mode, the kubelet's
// static pod directory and state, the files of /etc written at boot, and
// the fixed mkfs.erofs options that the
// node's differ and the build's converter share. containerd's, preseed's
// and the kubelet's configurations are derived from these, and the build's
// Starlark reads them from build/appliance/node.bzl, generated from here.
//
// It must hold values only: no code that runs, and no copy of what another
// contract package declares (the preseed tree and manifest paths are
// core/bundleformat's, the EROFS layer cache's core/erofscache's).
package node

const (
	// ContainerdRoot is containerd's persistent directory; the state disk,
	// when there is one, is mounted here.
	ContainerdRoot = "/var/lib/containerd"
	// ContainerdState is containerd's runtime directory (a tmpfs).
	ContainerdState = "/run/containerd"
	// ContainerdAddress is containerd's gRPC socket: its API and the CRI.
	ContainerdAddress = ContainerdState + "/containerd.sock"
	// ContainerdConfig is where the init writes containerd's config.toml.
	ContainerdConfig = ContainerdState + "/config.toml"

	// ErofsSnapshotter is the name of containerd's erofs snapshotter, the
	// only one that serves the EROFS layer content cache.
	ErofsSnapshotter = "erofs"
	// Snapshotter is the CRI's snapshotter, into which preseed unpacks.
	Snapshotter = ErofsSnapshotter
	// DmverityMode is the erofs snapshotter's dmverity_mode. "auto" mounts
	// a layer through its own loop device and dm-verity only when its blob
	// has a .dmverity sidecar, else straight from the file (the kernel's
	// file-backed EROFS mount, Linux 6.12).
	//
	// The build's cache blobs carry no sidecar: they sit on the system
	// partition, whose dm-verity already checks each block as it is read,
	// so a second tree per layer would hash every block twice and cost a
	// loop and a dm device per mount. Measured under TCG with
	// tests/e2e/hello's BenchmarkPodStart (pause and hello layers, 10 pods,
	// one run each): 1.27 s per pod start with per-layer dm-verity ("on"),
	// 1.16 s from the file. The layers containerd's differ converts on the
	// node (bundles without erofs_cache) get a sidecar, so they still
	// mount through dm-verity: they sit on the writable data partition,
	// which nothing else checks.
	DmverityMode = "auto"
	// RequireVerity makes preseed fail a cached layer without its sidecar,
	// as the snapshotter under DmverityMode would fail its mount.
	RequireVerity = DmverityMode == "on"

	// StaticPodDir is the kubelet's staticPodPath.
	StaticPodDir = "/etc/kubernetes/manifests"
	// KubeletRoot is the kubelet's state without a state disk.
	KubeletRoot = "/var/lib/kubelet"

	// RuntimeEtc holds the files of /etc that the node writes at boot, on
	// the /run tmpfs: the root is read-only when it is a system image.
	// /etc links to each (EtcLinks).
	RuntimeEtc = "/run/etc"
	// MachineID is the machine's identity (machine-id(5)).
	MachineID = RuntimeEtc + "/machine-id"
	// ResolvConf is the resolver configuration, which pods inherit.
	ResolvConf = RuntimeEtc + "/resolv.conf"
	// Hosts is the hosts file, which the CRI copies into every pod.
	Hosts = RuntimeEtc + "/hosts"
)

// EtcLinks are the symlinks in the root's /etc to the files the node
// writes at boot: each path to its target. The build puts them in the
// tree (build/appliance/node.bzl).
func EtcLinks() map[string]string {
	return map[string]string{
		"/etc/machine-id":  MachineID,
		"/etc/resolv.conf": ResolvConf,
		"/etc/hosts":       Hosts,
	}
}

// ErofsMkfsOptions are added to every mkfs.erofs run, on the node and in
// the build: a fixed build time (-T0) and no timestamps of files
// (--mkfs-time), so that a layer converts to the same bytes anywhere.
// A function, not a variable: callers get their own slice.
func ErofsMkfsOptions() []string { return []string{"-T0", "--mkfs-time"} }
