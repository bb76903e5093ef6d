// Package appliance_test boots the production appliance image under QEMU and
// checks what its serial console says: modules loaded, the network up,
// containerd ready, preseed's summary (3 imported, 0 failed), the static
// pod hello-web answering on its port (started by the appliance's kubelet),
// a clean power-off on the ACPI power button, and not one error logged from
// the start to the power-off. It must not need anything
// the production image lacks (it has no test endpoint).
package appliance_test

import (
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

	"github.com/appliance-bundler/appliance/tests/launch"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// logLine is one structured log line of init.
type logLine struct {
	Logger   string  `json:"logger"`
	Msg      string  `json:"msg"`
	Imported int     `json:"imported"`
	Skipped  int     `json:"skipped"`
	Failed   int     `json:"failed"`
	Module   string  `json:"module"`
	Duration float64 `json:"duration_seconds"`
}

// hello-web (images/hello-web) answers on this guest port, with this.
const (
	helloWebPort     = 8080
	helloWebGreeting = "Hello from hello-web"
)

func TestProductionImageBootsAndPreseeds(t *testing.T) {
	outDir := os.Getenv("TEST_UNDECLARED_OUTPUTS_DIR")
	if outDir == "" {
		outDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	vm, err := launch.Start(ctx, launch.Options{
		Disk:      runfile.Path(t, "DISK"),
		SerialLog: filepath.Join(outDir, "serial.log"),
		Forward:   []int{helloWebPort},
		Timeout:   8 * time.Minute,
	})
	if err != nil {
		t.Fatalf("failed to start the VM: %v", err)
	}
	defer vm.Kill()
	t.Logf("QEMU started with accel %s; serial log in the test's undeclared outputs", vm.Accel)

	since := func() time.Duration { return time.Since(vm.Started).Round(10 * time.Millisecond) }
	// The first stage's lines go to the console only (the JSON port opens
	// later): its first is a module of early boot.
	if _, err := vm.WaitForLine(ctx, "init's first line", launch.ConsoleMessage("INFO", "init", "module loaded")); err != nil {
		t.Fatal(err)
	}
	t.Logf("/init running (its first line) %s after QEMU start", since())
	if _, err := vm.WaitForLine(ctx, "the system mounted", launch.ConsoleMessage("INFO", "init", "system mounted")); err != nil {
		t.Fatal(err)
	}
	t.Logf("system partition mounted %s after QEMU start", since())
	if _, err := vm.WaitForLine(ctx, "the network up", launch.LogMessage("init", "network up")); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.WaitForLine(ctx, "containerd ready", launch.LogMessage("supervisor.root.containerd", "containerd ready")); err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd ready %s after QEMU start", since())
	line, err := vm.WaitForLine(ctx, "preseed's summary", launch.LogMessage("supervisor.root.containerd.preseed", "preseed finished"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("preseed done %s after QEMU start: %s", since(), line)
	var summary logLine
	json.Unmarshal([]byte(line), &summary)
	if summary.Imported != 3 || summary.Failed != 0 {
		t.Errorf("preseed imported %d and failed %d, want 3 imported and 0 failed", summary.Imported, summary.Failed)
	}
	answer := waitHelloWeb(ctx, t, vm.Ports[helloWebPort])
	t.Logf("hello-web answered %s after QEMU start: %q", since(), answer)
	loaded := make(map[string]bool)
	for _, l := range vm.Lines() {
		var ll logLine
		if json.Unmarshal([]byte(l), &ll) == nil && ll.Msg == "module loaded" {
			loaded[ll.Module] = true
		}
	}
	for _, m := range []string{"overlay", "bridge", "br_netfilter", "veth", "virtio_net"} {
		if !loaded[m] {
			t.Errorf("module %s was not loaded", m)
		}
	}
	if err := vm.PowerDown(ctx); err != nil {
		t.Fatalf("failed to press the power button: %v", err)
	}
	if _, err := vm.WaitForLine(ctx, "init powering off", launch.LogMessage("init", "power off")); err != nil {
		t.Fatal(err)
	}
	waitCtx, waitCancel := context.WithTimeout(ctx, time.Minute)
	defer waitCancel()
	if err := vm.Wait(waitCtx); err != nil {
		t.Fatalf("QEMU did not exit cleanly after power-off: %v", err)
	}
	t.Logf("powered off %s after QEMU start", since())
	// The whole boot, shutdown included: a healthy node logs no error,
	// the kubelet's known start-up errors of standalone mode being
	// lowered to info (core/kubelet's BenignErrors).
	for _, l := range vm.Lines() {
		if strings.Contains(l, `"level":"error"`) {
			t.Errorf("error on the console: %s", l)
		}
	}
}

// waitHelloWeb polls GET / of hello-web on port (on 127.0.0.1, forwarded to
// the guest) until it answers with its greeting, and returns the answer.
func waitHelloWeb(ctx context.Context, t *testing.T, port int) string {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	var last error
	for {
		body, err := get(ctx, url)
		if err == nil && strings.Contains(body, helloWebGreeting) {
			return body
		}
		last = err
		if err == nil {
			last = fmt.Errorf("answer %q lacks %q", body, helloWebGreeting)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("hello-web did not answer on %s: %v", url, last)
		case <-time.After(time.Second):
		}
	}
}

// get fetches url and wants 200 OK.
func get(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(body), nil
}
