// Package cli is what build/oci's tools share of their command lines: the
// dispatch of a subcommand, repeated flags, JSON specs and outputs that are
// whole or absent. It must hold no image, bundle or registry logic.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Main runs run with the subcommand and its arguments, under a context that
// ends on SIGINT or SIGTERM, and exits 2 with usage when there is no
// subcommand, 1 with the error when run fails.
func Main(tool, usage string, run func(ctx context.Context, cmd string, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err := run(ctx, os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", tool, os.Args[1], err)
		os.Exit(1)
	}
}

// ListFlag collects a repeated flag.
type ListFlag []string

func (l *ListFlag) String() string     { return strings.Join(*l, ",") }
func (l *ListFlag) Set(v string) error { *l = append(*l, v); return nil }

// ReadJSON decodes the spec file at path into v.
func ReadJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("failed to read spec %s: %w", path, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("failed to parse spec %s: %w", path, err)
	}
	return nil
}

// WriteFile creates path and runs write on it, removing it on failure so
// that no partial output is left.
func WriteFile(path string, write func(*os.File) error) error {
	if path == "" {
		return fmt.Errorf("no --out given")
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", path, err)
	}
	if err := write(f); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

// WriteDigest writes a digest and a newline to path, when path is given.
func WriteDigest(path, digest string) error {
	if path == "" {
		return nil
	}
	if err := os.WriteFile(path, []byte(digest+"\n"), 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}
