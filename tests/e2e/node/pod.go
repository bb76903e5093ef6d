package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/distribution/reference"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/preseed"
)

// Image names of the preseeded images (//images/hello, //images/pause).
const (
	HelloImage = "docker.io/library/hello:1.0"
	PauseImage = "localhost/appliance/pause:1.0"
	// Greeting is what the hello container prints (images/hello).
	Greeting = "Hello world from preseeded image"
)

// CheckPreseededImages checks through the CRI that each named image is
// present and pinned.
func (n *Node) CheckPreseededImages(ctx context.Context, t testing.TB, names ...string) {
	t.Helper()
	resp, err := n.Images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatalf("ListImages: %v", err)
	}
	for _, name := range names {
		found := false
		for _, img := range resp.Images {
			for _, tag := range img.RepoTags {
				if tag == name {
					found = true
					if !img.Pinned {
						t.Errorf("image %s is not pinned", name)
					}
				}
			}
		}
		if !found {
			t.Errorf("image %s is not in the CRI's image list", name)
		}
	}
}

// CheckAbsent checks that the refused bundle of image name (repo:tag) left
// no record at all: neither its tag nor any digest name of its repository,
// in containerd's image store nor in the CRI's list. Call it after the
// node's preseed status is done: Done means the CRI serves every image
// preseed registered, and it learns of records in the order they were
// written, so a stray record would be listed by then.
func (n *Node) CheckAbsent(ctx context.Context, t testing.TB, name string) {
	t.Helper()
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		t.Fatalf("image name %s: %v", name, err)
	}
	ofBundle := func(ref string) bool { return ref == name || strings.HasPrefix(ref, named.Name()+"@") }
	resp, err := n.Images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatalf("ListImages: %v", err)
	}
	for _, img := range resp.Images {
		for _, ref := range append(slices.Clone(img.RepoTags), img.RepoDigests...) {
			if ofBundle(ref) {
				t.Errorf("the CRI lists %s (image %s), but the bundle of %s was refused", ref, img.Id, name)
			}
		}
	}
	cl, err := containerd.NewWithConn(n.conn)
	if err != nil {
		t.Fatalf("containerd client: %v", err)
	}
	imgs, err := cl.ImageService().List(namespaces.WithNamespace(ctx, preseed.CRINamespace))
	if err != nil {
		t.Fatalf("containerd's image list: %v", err)
	}
	for _, img := range imgs {
		if ofBundle(img.Name) {
			t.Errorf("containerd holds record %s (%s), but the bundle of %s was refused", img.Name, img.Target.Digest, name)
		}
	}
}

// CheckWhole checks that every image record of the CRI's namespace is
// whole: unpacked in the erofs snapshotter, its layers' snapshots all
// there, so that no name points at content half there (a half-registered
// image, after a power cut).
func (n *Node) CheckWhole(ctx context.Context, t testing.TB) {
	t.Helper()
	cl, err := containerd.NewWithConn(n.conn)
	if err != nil {
		t.Fatalf("containerd client: %v", err)
	}
	nctx := namespaces.WithNamespace(ctx, preseed.CRINamespace)
	imgs, err := cl.ListImages(nctx)
	if err != nil {
		t.Fatalf("containerd's image list: %v", err)
	}
	whole := 0
	for _, img := range imgs {
		ok, err := img.IsUnpacked(nctx, node.ErofsSnapshotter)
		if err != nil || !ok {
			t.Errorf("record %s (%s) is not whole: unpacked %v (%v)", img.Name(), img.Target().Digest, ok, err)
			continue
		}
		whole++
	}
	t.Logf("%d records of %s, %d of them unpacked whole", len(imgs), preseed.CRINamespace, whole)
}

// RunHello runs a pod with one container of the hello image (see RunPod)
// and returns its exit code and log, which holds the greeting.
func (n *Node) RunHello(ctx context.Context, t testing.TB) (int32, string) {
	t.Helper()
	return n.RunPod(ctx, t, "hello", HelloImage, Greeting)
}

// RunPod runs a pod named name with one container of image, never calling
// PullImage, waits for the container to exit and for its log to contain
// want, and returns its exit code and log.
func (n *Node) RunPod(ctx context.Context, t testing.TB, name, image, want string) (int32, string) {
	t.Helper()
	id, err := n.StartPod(ctx, t, name, image)
	if err != nil {
		t.Fatalf("StartContainer %s: %v", image, err)
	}
	exit := n.waitExited(ctx, t, name, id)
	var log string
	Eventually(ctx, t, name+" container's log", func(ctx context.Context) error {
		l, err := n.PodLog(ctx, PodLogPath(name))
		if err != nil {
			return err
		}
		if !strings.Contains(l, want) {
			return fmt.Errorf("log %q lacks %q", l, want)
		}
		log = l
		return nil
	})
	return exit, log
}

// PodLogPath is the log of RunPod's and StartPod's container, relative to
// /var/log/pods.
func PodLogPath(name string) string {
	return "default_" + name + "_e2e-" + name + "/" + name + "/0.log"
}

// StartPod runs a pod sandbox named name and creates a container of image
// in it, never calling PullImage, and returns the container's ID and
// StartContainer's error: a test of a container that must not start reads
// it. Errors before that fail the test.
func (n *Node) StartPod(ctx context.Context, t testing.TB, name, image string) (string, error) {
	t.Helper()
	sandbox := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "e2e-" + name},
		Hostname:     name,
		LogDirectory: "/var/log/pods/default_" + name + "_e2e-" + name,
		Linux:        &runtimeapi.LinuxPodSandboxConfig{},
	}
	pod, err := n.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandbox})
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v", name, err)
	}
	t.Logf("pod sandbox %s (%s) running %s after QEMU start", pod.PodSandboxId, name, n.Since())
	ctr, err := n.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pod.PodSandboxId,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: name},
			Image:    &runtimeapi.ImageSpec{Image: image},
			LogPath:  name + "/0.log",
			Linux:    &runtimeapi.LinuxContainerConfig{},
		},
		SandboxConfig: sandbox,
	})
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", image, err)
	}
	_, err = n.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId})
	return ctr.ContainerId, err
}

// WaitExited waits for a container to exit and returns its status.
func (n *Node) WaitExited(ctx context.Context, t testing.TB, name, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	n.waitExited(ctx, t, name, id)
	st, err := n.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("ContainerStatus %s: %v", name, err)
	}
	return st.Status
}

// waitExited waits for a container to exit and returns its exit code.
func (n *Node) waitExited(ctx context.Context, t testing.TB, name, id string) int32 {
	t.Helper()
	var exit int32
	Eventually(ctx, t, name+" container to exit", func(ctx context.Context) error {
		st, err := n.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return err
		}
		if st.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			return fmt.Errorf("container state %s", st.Status.State)
		}
		exit = st.Status.ExitCode
		return nil
	})
	t.Logf("%s container exited (code %d) %s after QEMU start", name, exit, n.Since())
	return exit
}
