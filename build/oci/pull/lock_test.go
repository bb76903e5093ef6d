package pull_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/appliance-bundler/appliance/build/oci/bundle/layouttest"
	"github.com/appliance-bundler/appliance/build/oci/pull"
	"github.com/appliance-bundler/appliance/build/oci/pull/registrytest"
)

func writeLock(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "oci.lock.json")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLockUpdate resolves a new entry's tag against the registry, then
// checks that a pinned entry is not re-resolved when its tag moves, unless
// asked by name.
func TestLockUpdate(t *testing.T) {
	ctx := context.Background()
	reg := registrytest.New(t, registrytest.Bearer)
	tag, idx := pushIndex(t, reg, "library/multi:1.0")
	im, _ := idx.IndexManifest()
	single := reg.Push(t, "library/app:2.0", layouttest.RandomImage(t, testPlatforms[0]))
	repo := tag.Context().Name()

	path := writeLock(t, `{"images": [
  {"name": "multi", "image": "`+repo+`", "tag": "1.0", "platforms": ["linux/arm64", "linux/amd64"]},
  {"name": "app", "image": "`+single.Context().Name()+`", "tag": "2.0"}
]}`)
	l, err := pull.ReadLock(path)
	if err != nil {
		t.Fatal(err)
	}
	changes, err := pull.Update(ctx, l, pull.UpdateOptions{Remote: []remote.Option{registrytest.Creds()}})
	if err != nil {
		t.Fatalf("update failed: %v", err)
	}
	if len(changes) != 2 {
		t.Errorf("want 2 changes, got %q", changes)
	}
	e := l.Images[0]
	if e.Digest != registrytest.Digest(t, idx) {
		t.Fatalf("multi resolved to %s, want the index %s", e.Digest, registrytest.Digest(t, idx))
	}
	want := map[string]string{"linux/amd64": im.Manifests[0].Digest.String(), "linux/arm64/v8": im.Manifests[1].Digest.String()}
	if len(e.Manifests) != 2 || e.Manifests["linux/amd64"] != want["linux/amd64"] || e.Manifests["linux/arm64/v8"] != want["linux/arm64/v8"] {
		t.Errorf("multi manifests %v, want %v", e.Manifests, want)
	}
	if a := l.Images[1]; a.Manifests["linux/amd64"] != a.Digest || a.Digest == "" {
		t.Errorf("single-platform app: %+v", a)
	}

	// Canonical encoding: sorted by name, and stable.
	data, err := l.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Index(string(data), `"name": "app"`) > strings.Index(string(data), `"name": "multi"`) {
		t.Errorf("entries not sorted by name:\n%s", data)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	pinned := e.Digest

	// The tag moves: an update must not follow it silently.
	pushIndex(t, reg, "library/multi:1.0")
	l, err = pull.ReadLock(path)
	if err != nil {
		t.Fatal(err)
	}
	changes, err = pull.Update(ctx, l, pull.UpdateOptions{Remote: []remote.Option{registrytest.Creds()}})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := l.Encode()
	if len(changes) != 0 || string(again) != string(data) || l.Images[1].Digest != pinned {
		t.Fatalf("a pinned entry changed without being asked: %q\n%s", changes, again)
	}

	// Asked by name, it is re-resolved.
	changes, err = pull.Update(ctx, l, pull.UpdateOptions{Refresh: []string{"multi"}, Remote: []remote.Option{registrytest.Creds()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || l.Images[1].Digest == pinned || !strings.Contains(changes[0], pinned) {
		t.Fatalf("refresh of multi: changes %q, digest %s (was %s)", changes, l.Images[1].Digest, pinned)
	}

	if _, err := pull.Update(ctx, l, pull.UpdateOptions{Refresh: []string{"nosuch"}}); err == nil {
		t.Error("refreshing an unknown name was accepted")
	}
}

func TestLockRefusesBadEntries(t *testing.T) {
	reg := registrytest.New(t, registrytest.Anonymous)
	reg.Push(t, "library/x:1.0", layouttest.RandomImage(t, testPlatforms[0]))
	// Each is refused for its own reason: the error names it (the
	// registry is there and serves library/x:1.0, so no other failure can
	// stand in for it).
	for name, c := range map[string]struct{ content, want string }{
		"no tag or digest": {`{"images": [{"name": "x", "image": "` + reg.Host() + `/library/x"}]}`,
			"image x (" + reg.Host() + "/library/x) has neither digest nor tag: give a tag to resolve"},
		"unknown platform": {`{"images": [{"name": "x", "image": "` + reg.Host() + `/library/x", "tag": "1.0", "platforms": ["linux/s390x"]}]}`,
			"has no manifest for platform linux/s390x"},
	} {
		t.Run(name, func(t *testing.T) {
			l, err := pull.ReadLock(writeLock(t, c.content))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pull.Update(context.Background(), l, pull.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("update: %v, want an error saying %q", err, c.want)
			}
		})
	}
	for name, c := range map[string]struct{ content, want string }{
		"tag in image":  {`{"images": [{"name": "x", "image": "` + reg.Host() + `/library/x:1.0"}]}`, "is not a repository name (no tag or digest here)"},
		"duplicate":     {`{"images": [{"name": "x", "image": "a/b"}, {"name": "x", "image": "a/c"}]}`, `name "x" is used twice`},
		"unknown field": {`{"images": [{"name": "x", "image": "a/b", "sha": "1"}]}`, `unknown key "sha"`},
		"bad digest":    {`{"images": [{"name": "x", "image": "a/b", "digest": "sha256:1"}]}`, `digest "sha256:1" is not sha256:<64 hex digits>`},
	} {
		t.Run(name, func(t *testing.T) {
			path := writeLock(t, c.content)
			if _, err := pull.ReadLock(path); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("ReadLock: %v, want an error naming %s and saying %q", err, path, c.want)
			}
		})
	}
}

// TestLockMirrors: an entry's mirrors are read, kept in order by Encode,
// and a mirror that is not a repository name is refused naming the file.
func TestLockMirrors(t *testing.T) {
	path := writeLock(t, `{"images": [{"name": "base", "image": "127.0.0.1:5000/library/base",
  "digest": "sha256:`+strings.Repeat("a", 64)+`",
  "mirrors": ["127.0.0.1:5001/mirror/base", "127.0.0.1:5002/other/base"]}]}`)
	l, err := pull.ReadLock(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := l.Images[0].Mirrors; len(m) != 2 || m[0] != "127.0.0.1:5001/mirror/base" || m[1] != "127.0.0.1:5002/other/base" {
		t.Fatalf("mirrors read as %q", m)
	}
	data, err := l.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "\"mirrors\": [\n        \"127.0.0.1:5001/mirror/base\",\n        \"127.0.0.1:5002/other/base\"") {
		t.Errorf("encoded lock does not keep the mirrors in order:\n%s", data)
	}
	bad := writeLock(t, `{"images": [{"name": "base", "image": "127.0.0.1:5000/library/base",
  "digest": "sha256:`+strings.Repeat("a", 64)+`", "mirrors": ["127.0.0.1:5001/mirror/base@sha256:`+strings.Repeat("b", 64)+`"]}]}`)
	if _, err := pull.ReadLock(bad); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "mirror") {
		t.Errorf("want an error naming the file and the mirror, got %v", err)
	}
}
