package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-bundler/appliance/build/oci/cmd/internal/cli"
	"github.com/appliance-bundler/appliance/build/oci/pull"
)

// runPull fetches one pinned image into an OCI layout (the oci_fetch
// action). Credentials come from the Docker config.json named by
// --docker-config, else from the default keychain (DOCKER_CONFIG, which a
// build action sees only when passed with --action_env).
func runPull(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	var req pull.Request
	var plats, mirrors cli.ListFlag
	fs.StringVar(&req.Image, "image", "", "repository")
	fs.StringVar(&req.Digest, "digest", "", "pinned digest")
	fs.Var(&plats, "platform", "os/arch[/variant], repeatable")
	fs.Var(&mirrors, "mirror", "repository tried before the image's own, repeatable, in order")
	dockerConfig := fs.String("docker-config", "", "Docker config.json with the registry credentials")
	out := fs.String("out", "", "output layout directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("no --out given")
	}
	req.Platforms = plats
	req.Mirrors = mirrors
	var keychain authn.Keychain = authn.DefaultKeychain
	if *dockerConfig != "" {
		k, err := pull.DockerConfigKeychain(*dockerConfig)
		if err != nil {
			return err
		}
		keychain = k
	}
	return pull.Fetch(ctx, req, *out, remote.WithAuthFromKeychain(keychain))
}

// runLock resolves the tags of new (or refreshed) lock file entries and
// rewrites the lock file (bazel run of an oci_lock_update target).
func runLock(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lock", flag.ContinueOnError)
	lockPath := fs.String("lock", "", "lock file, relative to the workspace under bazel run")
	var refresh cli.ListFlag
	fs.Var(&refresh, "refresh", "re-resolve this pinned image's tag, repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return updateLock(ctx, *lockPath, refresh)
}

func updateLock(ctx context.Context, path string, refresh []string) error {
	// Under bazel run the working directory is the runfiles tree; the lock
	// file is in the source tree.
	if ws := os.Getenv("BUILD_WORKSPACE_DIRECTORY"); ws != "" && !filepath.IsAbs(path) {
		path = filepath.Join(ws, path)
	}
	l, err := pull.ReadLock(path)
	if err != nil {
		return err
	}
	changes, err := pull.Update(ctx, l, pull.UpdateOptions{Refresh: refresh, Remote: []remote.Option{remote.WithAuthFromKeychain(authn.DefaultKeychain)}})
	if err != nil {
		return err
	}
	data, err := l.Encode()
	if err != nil {
		return err
	}
	old, _ := os.ReadFile(path)
	if bytes.Equal(old, data) {
		fmt.Printf("%s is up to date\n", path)
		return nil
	}
	for _, c := range changes {
		fmt.Println(c)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("failed to write lock file %s: %w", path, err)
	}
	fmt.Printf("wrote %s\n", path)
	return nil
}
