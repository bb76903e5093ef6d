// Package node drives one appliance VM of the E2E variant for the tests in
// tests/e2e: it boots it with tests/launch, forwards the E2E endpoints of
// core/init/variant_e2e.go, waits for preseed through the node's status, and
// gives a CRI client. It must never pull an image: the E2E proves that pods
// start from preseeded images only.
package node

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/appliance-bundler/appliance/core/preseed/status"
	updatestatus "github.com/appliance-bundler/appliance/core/updater/status"
	"github.com/appliance-bundler/appliance/tests/launch"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// Guest ports of the E2E variant (core/init/variant_e2e.go).
const (
	criPort    = 7000
	statusPort = 7001
)

// Node is a booted appliance.
type Node struct {
	VM      *launch.VM
	Runtime runtimeapi.RuntimeServiceClient
	Images  runtimeapi.ImageServiceClient
	conn    *grpc.ClientConn
	t       testing.TB
}

// Extra are boot options some tests need.
type Extra struct {
	// Append is added to the kernel command line.
	Append string
	// State and DiskSize are launch.Options's: the VM's disk, kept across
	// boots when State is set, and its size.
	State    string
	DiskSize int64
	// MemoryMiB is the guest's memory; launch's default if 0.
	MemoryMiB int
	// Kubelet runs the node's kubelet. Off by default: the tests that
	// start their own pods through the CRI need it off, as a kubelet stops
	// every pod sandbox it did not start (core/init/variant_e2e.go).
	Kubelet bool
	// Reboot and GuestForward are launch.Options's: the guest may reboot
	// in the same QEMU, and reach host addresses.
	Reboot       bool
	GuestForward map[string]string
	// Timeout is the VM's life (default 10 minutes).
	Timeout time.Duration
}

// kubeletOff turns the E2E variant's kubelet off (core/init/variant_e2e.go).
const kubeletOff = "appliance.e2e.kubelet=off"

// Boot starts the VM of the disk image in $DISK (a runfiles path), booted
// through the firmware, with the serial log in the test's undeclared
// outputs, and stops it when the test ends.
func Boot(ctx context.Context, t testing.TB) *Node {
	t.Helper()
	return BootWith(ctx, t, Extra{})
}

// BootWith is Boot with extra options.
func BootWith(ctx context.Context, t testing.TB, extra Extra) *Node {
	t.Helper()
	out := os.Getenv("TEST_UNDECLARED_OUTPUTS_DIR")
	if out == "" {
		out = t.TempDir()
	}
	vm, err := launch.Start(ctx, launch.Options{
		Disk:      runfile.Path(t, "DISK"),
		Forward:   []int{criPort, statusPort, HelloWebPort},
		State:     extra.State,
		DiskSize:  extra.DiskSize,
		MemoryMiB: extra.MemoryMiB,
		Append:    appendArgs(extra),
		SerialLog: filepath.Join(out, fmt.Sprintf("serial-%s.log", time.Now().Format("150405.000"))),
		Console:   prefixWriter{prefix: "serial: ", w: os.Stderr},
		Timeout:   cmp.Or(extra.Timeout, 10*time.Minute),
		Reboot:    extra.Reboot,

		GuestForward: extra.GuestForward,
	})
	if err != nil {
		t.Fatalf("failed to boot the appliance: %v", err)
	}
	t.Cleanup(vm.Kill)
	t.Logf("QEMU started (accel %s), ports %v", vm.Accel, vm.Ports)
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", vm.Ports[criPort]),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("failed to create the CRI client: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return &Node{VM: vm, Runtime: runtimeapi.NewRuntimeServiceClient(conn), Images: runtimeapi.NewImageServiceClient(conn), conn: conn, t: t}
}

// appendArgs is the kernel command line's addition for extra.
func appendArgs(extra Extra) string {
	if extra.Kubelet {
		return extra.Append
	}
	return strings.TrimSpace(extra.Append + " " + kubeletOff)
}

// Since is the time since QEMU started.
func (n *Node) Since() time.Duration { return time.Since(n.VM.Started).Round(10 * time.Millisecond) }

// Eventually calls fn every second until it returns nil; it fails the test
// when ctx ends first, with fn's last error.
func Eventually(ctx context.Context, t testing.TB, what string, fn func(context.Context) error) {
	t.Helper()
	var last error
	for {
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		last = fn(callCtx)
		cancel()
		if last == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: gave up: %v", what, last)
		case <-time.After(time.Second):
		}
	}
}

// get fetches a path of the node's E2E HTTP endpoint.
func (n *Node) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", n.VM.Ports[statusPort], path), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, nil
}

// PreseedStatus waits until the node reports preseed done and returns the
// status.
func (n *Node) PreseedStatus(ctx context.Context) *status.Status {
	var st status.Status
	Eventually(ctx, n.t, "preseed status", func(ctx context.Context) error {
		body, err := n.get(ctx, "/preseed/status")
		if err != nil {
			return err
		}
		if err := json.Unmarshal(body, &st); err != nil {
			return fmt.Errorf("bad status %q: %w", body, err)
		}
		if st.State != "done" {
			return fmt.Errorf("preseed state %q", st.State)
		}
		return nil
	})
	return &st
}

// PodLog reads a container log file below the pods' log directory.
func (n *Node) PodLog(ctx context.Context, rel string) (string, error) {
	b, err := n.get(ctx, "/logs/"+rel)
	return string(b), err
}

// prefixWriter streams serial lines into the test's log (stderr), marked.
type prefixWriter struct {
	prefix string
	w      io.Writer
}

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// UpdateStatus reads the updater's status file (core/updater/status) from
// the node's data partition, through the E2E status server.
func (n *Node) UpdateStatus(ctx context.Context) (updatestatus.Status, error) {
	var st updatestatus.Status
	body, err := n.get(ctx, "/update/status")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("bad update status %q: %w", body, err)
	}
	return st, nil
}
