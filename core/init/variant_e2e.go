package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/appliance-bundler/appliance/core/containerd"
	"github.com/appliance-bundler/appliance/core/kubelet"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/preseed/status"
	"github.com/appliance-bundler/appliance/core/supervisor"
	updatestatus "github.com/appliance-bundler/appliance/core/updater/status"
)

// podLogDir is where the E2E's pods write their logs (their LogDirectory).
const podLogDir = "/var/log/pods"

// Ports of the E2E variant's endpoints, forwarded by the test harness with
// QEMU's hostfwd. Nothing else listens on the network.
const (
	criPort    = 7000 // containerd's socket (CRI and containerd API), as TCP
	statusPort = 7001 // GET /preseed/status, GET /logs/<pod dir>/...: files the CRI leaves no API for
)

// kubeletOff on the kernel command line boots the E2E variant without a
// kubelet, for the tests that drive the CRI themselves (tests/e2e/node): a
// kubelet stops every pod sandbox it did not start.
const kubeletOff = "appliance.e2e.kubelet=off"

// variantKubelet of the E2E variant tells whether to run the kubelet: not
// when cmdline (/proc/cmdline) has kubeletOff.
func variantKubelet(_ *kubelet.Config, cmdline string) bool {
	return !slices.Contains(strings.Fields(cmdline), kubeletOff)
}

// variantRunnables of the E2E variant: what the test harness needs to reach
// the node from outside the VM, and nothing else.
func variantRunnables() map[string]supervisor.Runnable {
	return map[string]supervisor.Runnable{
		"e2e-cri-proxy":     criProxy,
		"e2e-status-server": statusServer,
	}
}

// criProxy forwards TCP connections to containerd's unix socket.
func criProxy(ctx context.Context) error {
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", criPort))
	if err != nil {
		return fmt.Errorf("failed to listen on port %d: %w", criPort, err)
	}
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	supervisor.Signal(ctx, supervisor.SignalHealthy)
	logger := supervisor.Logger(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("failed to accept on port %d: %w", criPort, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			up, err := net.Dial("unix", node.ContainerdAddress)
			if err != nil {
				logger.Warn("failed to reach containerd", zap.Error(err))
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(up, conn); done <- struct{}{} }()
			go func() { io.Copy(conn, up); done <- struct{}{} }()
			select {
			case <-done:
			case <-ctx.Done():
			}
		}()
	}
}

// statusServer serves the preseed and update status files, the pods' log files, the
// kubelet's pod list and the guest's /proc/meminfo over HTTP, read-only, and
// kills the kubelet on request.
func statusServer(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /preseed/status", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, status.DefaultPath)
	})
	mux.HandleFunc("GET /update/status", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, updatestatus.Path)
	})
	mux.Handle("GET /logs/", http.StripPrefix("/logs/", http.FileServer(http.Dir(podLogDir))))
	mux.HandleFunc("GET /kubelet/pods", kubeletPods)
	mux.HandleFunc("POST /kubelet/kill", killKubelet)
	mux.HandleFunc("POST /supervisor/kill", killSupervisor)
	mux.HandleFunc("GET /processes", processes)
	mux.HandleFunc("GET /meminfo", meminfo)
	srv := &http.Server{Addr: fmt.Sprintf(":%d", statusPort), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	supervisor.Signal(ctx, supervisor.SignalHealthy)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("status server on port %d: %w", statusPort, err)
	}
	return ctx.Err()
}

// kubeletPods proxies the kubelet's pod list (with each pod's status) from
// its read-only port.
func kubeletPods(w http.ResponseWriter, r *http.Request) {
	url := "http://" + net.JoinHostPort(kubelet.Loopback, strconv.Itoa(kubelet.HealthReadOnlyPort)) + "/pods"
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, url, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, fmt.Sprintf("failed to reach the kubelet at %s: %v", url, err), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// killKubelet sends SIGKILL to the running kubelet, as a crash would end
// it, and answers {"pid": N}, or 404 when no kubelet runs.
func killKubelet(w http.ResponseWriter, r *http.Request) {
	pids, err := kubelet.Processes("/proc", kubelet.DefaultBinary)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if len(pids) == 0 {
		http.Error(w, "no kubelet runs", http.StatusNotFound)
		return
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			http.Error(w, fmt.Sprintf("failed to kill the kubelet (pid %d): %v", pid, err), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]int{"pid": pids[0]})
}

// killSupervisor answers {"pid": N} with the supervisor process's own pid,
// then ends that process with SIGKILL, as a crash would: PID 1 must leave
// nothing of its tree behind before it starts the next one.
func killSupervisor(w http.ResponseWriter, _ *http.Request) {
	body, _ := json.Marshal(map[string]int{"pid": os.Getpid()})
	// A length, not chunks: the whole answer is on the wire before the
	// handler would return, which it never does.
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

// processes answers {"<exe>": [pid, ...]} for the daemons whose count the
// E2E checks: containerd, the kubelet and the supervisor (/init).
func processes(w http.ResponseWriter, _ *http.Request) {
	out := make(map[string][]int)
	for _, exe := range []string{containerd.DefaultBinary, kubelet.DefaultBinary, "/init"} {
		pids, err := kubelet.Processes("/proc", exe)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out[exe] = pids
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// meminfo serves /proc/meminfo, read whole: http.ServeFile trusts the size
// stat gives, which is 0 for /proc files.
func meminfo(w http.ResponseWriter, _ *http.Request) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write(b)
}
