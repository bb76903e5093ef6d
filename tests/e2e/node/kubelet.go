package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The appliance's static pods (images/hello/pod.yaml, images/hello-web/pod.yaml).
const (
	HelloPod    = "hello"
	HelloWebPod = "hello-web"
	// HelloWebPort is the guest port hello-web answers on (hostNetwork).
	HelloWebPort = 8080
	// HelloWebGreeting is in hello-web's answer to GET /.
	HelloWebGreeting = "Hello from hello-web"
)

// staticSource is the kubelet's annotation value for pods read from its
// staticPodPath: the proof that the kubelet, not a test, started a pod.
const staticSource = "file"

// HelloWeb fetches GET / from hello-web through the forwarded port.
func (n *Node) HelloWeb(ctx context.Context) (string, error) {
	body, _, err := n.do(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", n.VM.Ports[HelloWebPort]))
	if err != nil {
		return "", err
	}
	if !strings.Contains(string(body), HelloWebGreeting) {
		return "", fmt.Errorf("hello-web answered %q, without %q", body, HelloWebGreeting)
	}
	return string(body), nil
}

// KubeletPods is the kubelet's own list of its pods, with their status
// (through the E2E status server, which proxies the kubelet's loopback
// read-only port).
func (n *Node) KubeletPods(ctx context.Context) (*corev1.PodList, error) {
	body, err := n.get(ctx, "/kubelet/pods")
	if err != nil {
		return nil, err
	}
	var pods corev1.PodList
	if err := json.Unmarshal(body, &pods); err != nil {
		return nil, fmt.Errorf("the kubelet's pod list %q: %w", body, err)
	}
	return &pods, nil
}

// StaticPod finds the static pod the kubelet made of the manifest named
// name: the kubelet names it <name>-<node name> and marks its source.
func StaticPod(pods *corev1.PodList, name string) (*corev1.Pod, error) {
	for i, p := range pods.Items {
		if strings.HasPrefix(p.Name, name+"-") && p.Annotations["kubernetes.io/config.source"] == staticSource {
			return &pods.Items[i], nil
		}
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	return nil, fmt.Errorf("the kubelet has no static pod %s; it has %q", name, names)
}

// KillKubelet sends SIGKILL to the node's kubelet and returns its pid.
func (n *Node) KillKubelet(ctx context.Context) (int, error) {
	body, _, err := n.do(ctx, http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/kubelet/kill", n.VM.Ports[statusPort]))
	if err != nil {
		return 0, err
	}
	var killed struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(body, &killed); err != nil || killed.PID == 0 {
		return 0, fmt.Errorf("POST /kubelet/kill answered %q: %v", body, err)
	}
	return killed.PID, nil
}

// KillSupervisor sends SIGKILL to the node's supervisor process (from
// inside it) and returns its pid.
func (n *Node) KillSupervisor(ctx context.Context) (int, error) {
	body, _, err := n.do(ctx, http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/supervisor/kill", n.VM.Ports[statusPort]))
	if err != nil {
		return 0, err
	}
	var killed struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(body, &killed); err != nil || killed.PID == 0 {
		return 0, fmt.Errorf("POST /supervisor/kill answered %q: %v", body, err)
	}
	return killed.PID, nil
}

// Executables of the daemons whose processes Processes counts.
const (
	ContainerdBinary = "/usr/bin/containerd"
	KubeletBinary    = "/usr/bin/kubelet"
	InitBinary       = "/init"
)

// Processes lists the pids of the node's containerd, kubelet and /init
// (PID 1 and the supervisor) processes, by executable.
func (n *Node) Processes(ctx context.Context) (map[string][]int, error) {
	body, err := n.get(ctx, "/processes")
	if err != nil {
		return nil, err
	}
	var out map[string][]int
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("GET /processes answered %q: %w", body, err)
	}
	return out, nil
}

// CheckNoPulls fails the test if containerd logged any image pull: every
// pod must have started from preseeded images.
func (n *Node) CheckNoPulls(t testing.TB) {
	t.Helper()
	for _, l := range n.VM.Lines() {
		// containerd's CRI logs every PullImage request at info level.
		if strings.Contains(l, "PullImage") {
			t.Errorf("the node pulled an image: %s", l)
		}
	}
}

// do sends a request and wants 200 OK.
func (n *Node) do(ctx context.Context, method, url string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, body)
	}
	return body, resp.StatusCode, nil
}

// Memory is the guest's MemTotal and MemAvailable in kB, from its
// /proc/meminfo.
func (n *Node) Memory(ctx context.Context) (total, available int, err error) {
	body, err := n.get(ctx, "/meminfo")
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(body), "\n") {
		fmt.Sscanf(l, "MemTotal: %d kB", &total)
		fmt.Sscanf(l, "MemAvailable: %d kB", &available)
	}
	if total == 0 || available == 0 {
		return 0, 0, fmt.Errorf("no MemTotal or MemAvailable in the guest's /proc/meminfo: %q", body)
	}
	return total, available, nil
}
