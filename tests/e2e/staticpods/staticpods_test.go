// Package staticpods_test is the E2E proof that the appliance runs its own
// workloads: the E2E appliance boots under QEMU, its kubelet starts the
// static pods declared in Bazel (hello and hello-web) from preseeded images
// only, and a kubelet killed inside the VM is restarted by the init's
// supervisor while hello-web keeps answering. The test starts no pod
// itself.
package staticpods_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/appliance-bundler/appliance/tests/e2e/node"
	"github.com/appliance-bundler/appliance/tests/launch"
)

// kubeletLogger is the supervisor's logger of the kubelet runnable.
const kubeletLogger = "supervisor.root.containerd.kubelet"

func TestKubeletRunsStaticPodsFromPreseededImages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	n := node.BootWith(ctx, t, node.Extra{Kubelet: true})
	if _, err := n.VM.WaitForLine(ctx, "containerd ready", launch.LogMessage("supervisor.root.containerd", "containerd ready")); err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd ready %s after QEMU start", n.Since())

	answer := waitHelloWeb(ctx, t, n)
	t.Logf("hello-web answered %s after QEMU start: %q", n.Since(), answer)
	st := n.PreseedStatus(ctx)
	t.Logf("preseed: imported %d, skipped %d, failed %d", st.Imported, st.Skipped, st.Failed)
	if st.Imported != 3 || st.Failed != 0 {
		t.Errorf("preseed imported %d and failed %d, want 3 and 0: %+v", st.Imported, st.Failed, st.Bundles)
	}

	hello := waitPhase(ctx, t, n, node.HelloPod, corev1.PodSucceeded)
	t.Logf("pod %s Succeeded (seen %s after QEMU start)", hello.Name, n.Since())
	checkHelloLog(ctx, t, n, hello)
	web := waitPhase(ctx, t, n, node.HelloWebPod, corev1.PodRunning)
	checkPinnedImages(t, hello, web)
	checkLeastPrivilege(ctx, t, n, web)
	if total, avail, err := n.Memory(ctx); err != nil {
		t.Errorf("guest memory: %v", err)
	} else {
		t.Logf("guest memory with the pods running: MemTotal %d kB, MemAvailable %d kB, in use %d kB", total, avail, total-avail)
	}

	restartKubelet(ctx, t, n, web)
	restartSupervisor(ctx, t, n)
	n.CheckNoPulls(t)
}

// waitHelloWeb waits until hello-web answers GET / through the forwarded
// port and returns its answer.
func waitHelloWeb(ctx context.Context, t *testing.T, n *node.Node) string {
	t.Helper()
	var answer string
	node.Eventually(ctx, t, "hello-web answering", func(ctx context.Context) error {
		a, err := n.HelloWeb(ctx)
		answer = a
		return err
	})
	return answer
}

// waitPhase waits until the kubelet reports its static pod name in phase.
func waitPhase(ctx context.Context, t *testing.T, n *node.Node, name string, phase corev1.PodPhase) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	node.Eventually(ctx, t, fmt.Sprintf("static pod %s %s", name, phase), func(ctx context.Context) error {
		pods, err := n.KubeletPods(ctx)
		if err != nil {
			return err
		}
		p, err := node.StaticPod(pods, name)
		if err != nil {
			return err
		}
		if p.Status.Phase != phase {
			return fmt.Errorf("pod %s is %s (%s), want %s", p.Name, p.Status.Phase, p.Status.Message, phase)
		}
		pod = p
		return nil
	})
	return pod
}

// checkHelloLog wants hello's greeting in the log the kubelet's container
// left under /var/log/pods/<namespace>_<name>_<uid>/<container>/0.log.
func checkHelloLog(ctx context.Context, t *testing.T, n *node.Node, hello *corev1.Pod) {
	t.Helper()
	for _, c := range hello.Status.ContainerStatuses {
		if c.State.Terminated == nil || c.State.Terminated.ExitCode != 0 {
			t.Errorf("container %s of %s: state %+v, want terminated with exit code 0", c.Name, hello.Name, c.State)
		}
	}
	rel := fmt.Sprintf("%s_%s_%s/%s/0.log", hello.Namespace, hello.Name, hello.UID, hello.Spec.Containers[0].Name)
	node.Eventually(ctx, t, "hello's log", func(ctx context.Context) error {
		log, err := n.PodLog(ctx, rel)
		if err != nil {
			return err
		}
		if !strings.Contains(log, node.Greeting) {
			return fmt.Errorf("%s is %q, without %q", rel, log, node.Greeting)
		}
		t.Logf("%s: %q", rel, log)
		return nil
	})
}

// checkPinnedImages wants every container of the pods to run the digest
// reference static_pod pinned, with imagePullPolicy Never.
func checkPinnedImages(t *testing.T, pods ...*corev1.Pod) {
	t.Helper()
	for _, p := range pods {
		for _, c := range p.Spec.Containers {
			if !strings.Contains(c.Image, "@sha256:") || c.ImagePullPolicy != corev1.PullNever {
				t.Errorf("pod %s container %s: image %q, pull policy %s; want a digest reference and Never", p.Name, c.Name, c.Image, c.ImagePullPolicy)
			}
		}
		for _, c := range p.Status.ContainerStatuses {
			t.Logf("pod %s container %s: image %s, image ID %s", p.Name, c.Name, c.Image, c.ImageID)
		}
	}
}

// restartKubelet kills the kubelet inside the VM and wants the supervisor
// to start a new one, while hello-web answers all along (polled from the
// kill until the new kubelet reports it), and the new kubelet to report
// hello-web's very container running: the same container ID, restart
// count and start time (a static pod's UID is a hash of its manifest,
// equal even if the container were made anew).
func restartKubelet(ctx context.Context, t *testing.T, n *node.Node, web *corev1.Pod) {
	t.Helper()
	before := len(n.VM.Lines())
	was := containerOf(t, web)
	pid, err := n.KillKubelet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the kubelet (pid %d) %s after QEMU start", pid, n.Since())
	// hello-web is polled while no kubelet runs, and until the new one
	// reports it.
	pollCtx, stopPolling := context.WithCancel(ctx)
	polled := make(chan error, 1)
	go func() { polled <- pollHelloWeb(pollCtx, n) }()
	started := func(l string) bool {
		return launch.LogMessage(kubeletLogger, "started")(l) && !strings.Contains(l, fmt.Sprintf(`"pid":%d`, pid))
	}
	if _, err := n.VM.WaitForLineFrom(ctx, before, "a new kubelet", started); err != nil {
		t.Fatal(err)
	}
	t.Logf("a new kubelet started %s after QEMU start", n.Since())
	again := waitPhase(ctx, t, n, node.HelloWebPod, corev1.PodRunning)
	stopPolling()
	if err := <-polled; err != nil {
		t.Errorf("hello-web while the kubelet was down: %v", err)
	}
	t.Logf("the new kubelet reports %s Running %s after QEMU start", again.Name, n.Since())
	now := containerOf(t, again)
	if now.ContainerID != was.ContainerID || now.RestartCount != was.RestartCount || !now.State.Running.StartedAt.Equal(&was.State.Running.StartedAt) {
		t.Errorf("hello-web's container after the kubelet's restart: %s, restarts %d, started %v; before: %s, restarts %d, started %v",
			now.ContainerID, now.RestartCount, now.State.Running.StartedAt, was.ContainerID, was.RestartCount, was.State.Running.StartedAt)
	}
	waitHelloWeb(ctx, t, n)
	t.Logf("hello-web answers after the kubelet's restart, %s after QEMU start", n.Since())
}

// containerOf is the status of the pod's one container, running.
func containerOf(t *testing.T, p *corev1.Pod) corev1.ContainerStatus {
	t.Helper()
	if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Running == nil {
		t.Fatalf("pod %s: container statuses %+v, want one running", p.Name, p.Status.ContainerStatuses)
	}
	return p.Status.ContainerStatuses[0]
}

// pollHelloWeb asks hello-web until ctx ends, at least once, and returns
// the first failed answer, if any. A try under way when ctx ends is
// finished (each is bounded), so that none is cut short into a failure.
func pollHelloWeb(ctx context.Context, n *node.Node) error {
	for tries := 1; ; tries++ {
		callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_, err := n.HelloWeb(callCtx)
		cancel()
		if err != nil {
			return fmt.Errorf("try %d: %w", tries, err)
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// restartSupervisor kills the supervisor process inside the VM, as a crash
// would, and wants PID 1 to start a new one that runs exactly one
// containerd and one kubelet (nothing of the old tree left to race them),
// whose CRI answers, while hello-web answers all along.
func restartSupervisor(ctx context.Context, t *testing.T, n *node.Node) {
	t.Helper()
	pid, err := n.KillSupervisor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the supervisor (pid %d) %s after QEMU start", pid, n.Since())
	// The pods run under containerd's shims, which outlive the tree:
	// hello-web answers all along.
	pollCtx, stopPolling := context.WithCancel(ctx)
	polled := make(chan error, 1)
	go func() { polled <- pollHelloWeb(pollCtx, n) }()
	node.Eventually(ctx, t, "a new supervisor with one containerd and one kubelet", func(ctx context.Context) error {
		procs, err := n.Processes(ctx)
		if err != nil {
			return err
		}
		inits := procs[node.InitBinary]
		if len(inits) != 2 || slices.Contains(inits, pid) {
			return fmt.Errorf("/init processes %v, want PID 1 and a new supervisor (the old was %d)", inits, pid)
		}
		if c, k := procs[node.ContainerdBinary], procs[node.KubeletBinary]; len(c) != 1 || len(k) != 1 {
			return fmt.Errorf("containerd processes %v, kubelet processes %v; want one each", c, k)
		}
		if _, err := n.Images.ListImages(ctx, &runtimeapi.ListImagesRequest{}); err != nil {
			return fmt.Errorf("the CRI does not answer: %w", err)
		}
		return nil
	})
	stopPolling()
	if err := <-polled; err != nil {
		t.Errorf("hello-web while the supervisor restarted: %v", err)
	}
	t.Logf("a new supervisor runs one containerd and one kubelet, and the CRI answers, %s after QEMU start", n.Since())
	waitHelloWeb(ctx, t, n)
	t.Logf("hello-web answers after the supervisor's restart, %s after QEMU start", n.Since())
	// Nothing of the old tree may come back later either.
	procs, err := n.Processes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c, k := procs[node.ContainerdBinary], procs[node.KubeletBinary]; len(c) != 1 || len(k) != 1 {
		t.Errorf("after hello-web answered: containerd processes %v, kubelet processes %v; want one each", c, k)
	}
}

// checkLeastPrivilege asks the CRI for the OCI spec hello-web's container
// runs with: the runtime's default seccomp profile (the kubelet's
// seccompDefault, and the pod's RuntimeDefault), an unprivileged user, no
// capabilities, no new privileges and a read-only root.
func checkLeastPrivilege(ctx context.Context, t *testing.T, n *node.Node, web *corev1.Pod) {
	t.Helper()
	if len(web.Status.ContainerStatuses) != 1 {
		t.Fatalf("hello-web has container statuses %+v, want one", web.Status.ContainerStatuses)
	}
	id := strings.TrimPrefix(web.Status.ContainerStatuses[0].ContainerID, "containerd://")
	resp, err := n.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatalf("CRI ContainerStatus %s: %v", id, err)
	}
	var info struct {
		RuntimeSpec struct {
			Process struct {
				User            struct{ UID, GID int }
				NoNewPrivileges bool `json:"noNewPrivileges"`
				Capabilities    map[string][]string
			}
			Root  struct{ Readonly bool }
			Linux struct {
				Seccomp *struct {
					DefaultAction string `json:"defaultAction"`
					Syscalls      []json.RawMessage
				}
			}
		} `json:"runtimeSpec"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil {
		t.Fatalf("CRI ContainerStatus %s: verbose info: %v", id, err)
	}
	spec := info.RuntimeSpec
	if sc := spec.Linux.Seccomp; sc == nil || sc.DefaultAction == "SCMP_ACT_ALLOW" || len(sc.Syscalls) == 0 {
		t.Errorf("hello-web runs with seccomp %+v, want the runtime's default profile", sc)
	} else {
		t.Logf("hello-web's seccomp profile: default action %s, %d syscall rules", sc.DefaultAction, len(sc.Syscalls))
	}
	if spec.Process.User.UID != 65534 || spec.Process.User.GID != 65534 {
		t.Errorf("hello-web runs as %d:%d, want 65534:65534, the image's user", spec.Process.User.UID, spec.Process.User.GID)
	}
	for set, caps := range spec.Process.Capabilities {
		if len(caps) > 0 {
			t.Errorf("hello-web has %s capabilities %q, want none", set, caps)
		}
	}
	if !spec.Process.NoNewPrivileges || !spec.Root.Readonly {
		t.Errorf("hello-web: noNewPrivileges %v, read-only root %v; want both", spec.Process.NoNewPrivileges, spec.Root.Readonly)
	}
}
