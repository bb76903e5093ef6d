// Command hello-web is the appliance's long-running example pod: a small
// HTTP server on the host network whose GET / answers with a greeting and
// the host's name, so a test can see that the kubelet started it from the
// preseeded image. It shuts down cleanly on SIGTERM (the kubelet's stop).
// It must stay pure Go and depend on nothing in the image's filesystem (the
// image holds only this binary).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Port is the fixed TCP port hello-web listens on, on all addresses; the
// pod is on the host network and the tests forward it.
const Port = 8080

// Greeting starts the body of GET /: what the tests look for.
const Greeting = "Hello from hello-web"

// shutdownTimeout bounds the wait for requests in flight after SIGTERM,
// well inside the kubelet's default grace period of 30 s.
const shutdownTimeout = 5 * time.Second

// handler answers GET / with the greeting, the message if any, and the
// hostname; anything else is 404 or 405.
func handler(hostname, message string) http.Handler {
	mux := http.NewServeMux()
	if message != "" {
		message = " (" + message + ")"
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s%s on %s\n", Greeting, message, hostname)
	})
	return mux
}

func main() {
	log, err := zap.NewProduction()
	if err != nil {
		fmt.Fprintf(os.Stderr, "hello-web: failed to create logger: %v\n", err)
		os.Exit(1)
	}
	// Only tests set -address: on a shared machine port 8080 may be taken.
	addr := flag.String("address", net.JoinHostPort("", strconv.Itoa(Port)), "address to listen on")
	// A pod's args can tell releases apart (the update E2E).
	message := flag.String("message", "", "added to the greeting, in parentheses")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := serve(ctx, log, *addr, *message); err != nil {
		log.Error("hello-web failed", zap.Error(err))
		os.Exit(1)
	}
}

// serve runs the server on addr until ctx is done, then shuts it down.
func serve(ctx context.Context, log *zap.Logger, addr, message string) error {
	hostname, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("failed to read the hostname: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: handler(hostname, message), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("serving", zap.String("address", ln.Addr().String()), zap.String("hostname", hostname))
	select {
	case err := <-done:
		return fmt.Errorf("failed to serve on %s: %w", addr, err)
	case <-ctx.Done():
	}
	log.Info("shutting down", zap.Duration("timeout", shutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("failed to shut down: %w", err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("failed to serve on %s: %w", addr, err)
	}
	return nil
}
