package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/tests/runfile"
)

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(handler("box", ""))
	defer srv.Close()
	withMessage := httptest.NewServer(handler("box", "v2"))
	defer withMessage.Close()
	for _, tc := range []struct {
		srv          *httptest.Server
		method, path string
		status       int
		body         string
	}{
		{srv, "GET", "/", http.StatusOK, Greeting + " on box\n"},
		{withMessage, "GET", "/", http.StatusOK, Greeting + " (v2) on box\n"},
		{srv, "GET", "/other", http.StatusNotFound, ""},
		{srv, "POST", "/", http.StatusMethodNotAllowed, ""},
	} {
		req, err := http.NewRequestWithContext(t.Context(), tc.method, tc.srv.URL+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.status || (tc.body != "" && string(body) != tc.body) {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, body, tc.status, tc.body)
		}
	}
}

// TestBinaryServesAndStopsOnSIGTERM runs the built binary (the one the
// image holds) on a free loopback port (8080 may be taken on the test
// machine): GET / answers, and SIGTERM ends it with exit status 0.
func TestBinaryServesAndStopsOnSIGTERM(t *testing.T) {
	cmd := exec.Command(runfile.Path(t, "HELLO_WEB"), "-address", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stderr)
	var serving struct{ Msg, Address string }
	if !lines.Scan() || json.Unmarshal(lines.Bytes(), &serving) != nil || serving.Msg != "serving" {
		t.Fatalf("hello-web's first log line is %q, want serving and the address", lines.Text())
	}
	go io.Copy(io.Discard, stderr)
	resp, err := http.Get("http://" + serving.Address + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), Greeting) {
		t.Fatalf("GET /: %d %q", resp.StatusCode, body)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("hello-web after SIGTERM: %v, want exit status 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("hello-web did not exit within 10 s of SIGTERM")
	}
}
