package updater

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/appliance-bundler/appliance/core/kubelet"
	"github.com/appliance-bundler/appliance/core/node"
	preseedstatus "github.com/appliance-bundler/appliance/core/preseed/status"
)

// NodeHealth is what makes a new system healthy enough to commit: containerd
// answers on its CRI, preseed is done with no bundle failed, the kubelet's
// healthz answers, and every static pod has Succeeded or is Running with
// every container ready.
type NodeHealth struct {
	// ContainerdAddress is containerd's socket.
	ContainerdAddress string
	// PreseedStatus is preseed's status file.
	PreseedStatus string
	// StaticPodDir holds the static pods' manifests: each must be a pod of
	// the kubelet's.
	StaticPodDir string
	// HealthzPort and ReadOnlyPort are the kubelet's, on loopback.
	HealthzPort, ReadOnlyPort int
}

// DefaultHealth is the node's.
func DefaultHealth() NodeHealth {
	return NodeHealth{
		ContainerdAddress: node.ContainerdAddress,
		PreseedStatus:     preseedstatus.DefaultPath,
		StaticPodDir:      node.StaticPodDir,
		HealthzPort:       kubelet.DefaultHealthzPort,
		ReadOnlyPort:      kubelet.HealthReadOnlyPort,
	}
}

// Check returns nil when healthy, else the first reason it is not.
func (h NodeHealth) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		what  string
		check func(context.Context) error
	}{
		{"containerd", h.containerd},
		{"preseed", h.preseed},
		{"kubelet", h.kubelet},
		{"static pods", h.pods},
	} {
		if err := c.check(ctx); err != nil {
			return fmt.Errorf("%s: %w", c.what, err)
		}
	}
	return nil
}

func (h NodeHealth) containerd(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+h.ContainerdAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		return fmt.Errorf("CRI does not answer: %w", err)
	}
	return nil
}

func (h NodeHealth) preseed(context.Context) error {
	s, err := preseedstatus.Read(h.PreseedStatus)
	if err != nil {
		return err
	}
	if s.State != preseedstatus.StateDone {
		return fmt.Errorf("not done (state %q)", s.State)
	}
	if s.Failed > 0 {
		return fmt.Errorf("%d bundles failed", s.Failed)
	}
	return nil
}

func (h NodeHealth) get(ctx context.Context, port int, path string) (*http.Response, error) {
	url := "http://" + net.JoinHostPort(kubelet.Loopback, strconv.Itoa(port)) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return resp, nil
}

func (h NodeHealth) kubelet(ctx context.Context) error {
	resp, err := h.get(ctx, h.HealthzPort, "/healthz")
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// pods checks that the kubelet runs one pod for each static pod manifest
// and that each is healthy.
func (h NodeHealth) pods(ctx context.Context) error {
	manifests, err := os.ReadDir(h.StaticPodDir)
	if err != nil {
		return err
	}
	want := 0
	for _, m := range manifests {
		if strings.HasSuffix(m.Name(), ".yaml") {
			want++
		}
	}
	resp, err := h.get(ctx, h.ReadOnlyPort, "/pods")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var list corev1.PodList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return fmt.Errorf("the kubelet's pod list: %w", err)
	}
	got := 0
	for _, p := range list.Items {
		if p.Annotations["kubernetes.io/config.source"] != "file" {
			continue
		}
		got++
		if err := podHealthy(p); err != nil {
			return fmt.Errorf("pod %s: %w", p.Name, err)
		}
	}
	if got < want {
		return fmt.Errorf("%d of %d static pods started", got, want)
	}
	return nil
}

func podHealthy(p corev1.Pod) error {
	switch p.Status.Phase {
	case corev1.PodSucceeded:
		return nil
	case corev1.PodRunning:
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("running, not ready")
	}
	return fmt.Errorf("phase %s", p.Status.Phase)
}
