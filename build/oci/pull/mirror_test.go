package pull_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-bundler/appliance/build/oci/bundle/layouttest"
	"github.com/appliance-bundler/appliance/build/oci/pull"
	"github.com/appliance-bundler/appliance/build/oci/pull/registrytest"
	"github.com/appliance-bundler/appliance/build/oci/validate"
)

func TestFetchTriesMirrorsInOrder(t *testing.T) {
	origin := registrytest.New(t, registrytest.Anonymous)
	empty := registrytest.New(t, registrytest.Anonymous)
	mirror := registrytest.New(t, registrytest.Anonymous)
	tag, idx := pushIndex(t, mirror, "mirror/multi:1.0")
	unreachable := registrytest.ClosedAddr(t) + "/mirror/multi"
	missing := empty.Host() + "/mirror/multi"
	req := pull.Request{
		Image:     origin.Host() + "/library/multi",
		Digest:    registrytest.Digest(t, idx),
		Platforms: []string{"linux/amd64"},
		Mirrors:   []string{unreachable, missing, tag.Context().Name()},
	}
	dest := filepath.Join(t.TempDir(), "layout")
	if err := pull.Fetch(context.Background(), req, dest); err != nil {
		t.Fatalf("fetch through the third mirror failed: %v", err)
	}
	im, _ := idx.IndexManifest()
	checkNarrowed(t, dest, req.Digest, im, "linux/amd64")

	// The origin does not have it either: the error names every source,
	// in order, with its failure.
	req.Mirrors = []string{unreachable, missing}
	err := pull.Fetch(context.Background(), req, filepath.Join(t.TempDir(), "layout"))
	if err == nil {
		t.Fatal("fetch with no source holding the image succeeded")
	}
	t.Logf("refused: %v", err)
	msg := err.Error()
	last := -1
	for _, src := range []string{unreachable, missing, req.Image} {
		i := strings.Index(msg, src+" (")
		if i < 0 || i < last {
			t.Errorf("error does not name source %s after the previous one: %v", src, err)
		}
		last = i
	}
	for _, want := range []string{"connection refused", "NAME_UNKNOWN", "mirror 1 of 2", "the image's own repository"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
}

func TestFetchMirrorServingWrongBytesFallsBack(t *testing.T) {
	bad := registrytest.New(t, registrytest.Anonymous)
	good := registrytest.New(t, registrytest.Anonymous)
	img := layouttest.RandomImage(t, testPlatforms[0])
	badTag := bad.Push(t, "mirror/app:1.0", img)
	goodTag := good.Push(t, "library/app:1.0", img)
	layers, _ := img.Layers()
	bad.Tamper(registrytest.Digest(t, layers[0]))
	req := pull.Request{Image: goodTag.Context().Name(), Digest: registrytest.Digest(t, img), Mirrors: []string{badTag.Context().Name()}}
	dest := filepath.Join(t.TempDir(), "layout")
	if err := pull.Fetch(context.Background(), req, dest); err != nil {
		t.Fatalf("fetch did not fall back to the origin: %v", err)
	}
	if _, err := validate.Layout(dest); err != nil {
		t.Fatal(err)
	}
	// The origin alone serving wrong bytes is a plain digest error.
	good.Tamper(registrytest.Digest(t, layers[0]))
	err := pull.Fetch(context.Background(), req, filepath.Join(t.TempDir(), "layout"))
	if err == nil || strings.Count(err.Error(), "does not match its digest") != 2 {
		t.Fatalf("want both sources refused for a digest mismatch, got %v", err)
	}
}

func TestFetchRefusesBadMirror(t *testing.T) {
	req := pull.Request{Image: "127.0.0.1:1/a/b", Digest: "sha256:" + strings.Repeat("a", 64), Mirrors: []string{"127.0.0.1:1/a/b:tag"}}
	err := pull.Fetch(context.Background(), req, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1/a/b:tag") {
		t.Fatalf("want an error naming the bad mirror, got %v", err)
	}
}

// writeDockerConfig writes a config.json with an auths entry for host.
func writeDockerConfig(t *testing.T, host, user, password string) string {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	path := filepath.Join(t.TempDir(), "config.json")
	data := fmt.Sprintf(`{"auths": {"http://%s/v1/": {"auth": %q}}, "credHelpers": {"127.0.0.2:1": "secretservice"}}`, host, auth)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFetchWithDockerConfig(t *testing.T) {
	for _, mode := range []string{registrytest.Basic, registrytest.Bearer} {
		t.Run(mode, func(t *testing.T) {
			reg := registrytest.New(t, mode)
			_, req := pushApp(t, reg)
			k, err := pull.DockerConfigKeychain(writeDockerConfig(t, reg.Host(), registrytest.User, registrytest.Password))
			if err != nil {
				t.Fatal(err)
			}
			if err := pull.Fetch(context.Background(), req, filepath.Join(t.TempDir(), "l"), remote.WithAuthFromKeychain(k)); err != nil {
				t.Fatalf("fetch with credentials from config.json failed: %v", err)
			}
			k, err = pull.DockerConfigKeychain(writeDockerConfig(t, reg.Host(), registrytest.User, "wrong"))
			if err != nil {
				t.Fatal(err)
			}
			err = pull.Fetch(context.Background(), req, t.TempDir(), remote.WithAuthFromKeychain(k))
			if err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") && !strings.Contains(err.Error(), "401") {
				t.Fatalf("want an authentication error with wrong credentials, got %v", err)
			}
		})
	}
}

func TestDockerConfigErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "config.json")
	if _, err := pull.DockerConfigKeychain(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("want an error naming the missing file, got %v", err)
	}
	bad := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(bad, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := pull.DockerConfigKeychain(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("want an error naming the unparsable file, got %v", err)
	}
	path := writeDockerConfig(t, "127.0.0.1:5000", registrytest.User, registrytest.Password)
	k, err := pull.DockerConfigKeychain(path)
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository("127.0.0.2:1/a/b")
	if _, err := k.Resolve(repo); err == nil || !strings.Contains(err.Error(), "secretservice") || !strings.Contains(err.Error(), path) {
		t.Errorf("want an error naming the credential helper and the file, got %v", err)
	}
}
