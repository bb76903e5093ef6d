// Package pull runs the Bazel pull path as a user does: a registry on
// 127.0.0.1, a small workspace that uses this module's rules through bzlmod
// (oci.from_lock and oci.pull), built by the project's own Bazel nested in
// the test. It only tests; it must not be imported, and it never talks to a
// registry other than the ones it starts.
package pull

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/appliance-bundler/appliance/build/oci/bundle/layouttest"
	"github.com/appliance-bundler/appliance/build/oci/pull"
	"github.com/appliance-bundler/appliance/build/oci/pull/registrytest"
)

// nested is a Bazel server of its own (output_user_root under the test's
// tmp) on a workspace of its own, with the outer build's offline flags,
// repository cache, disk cache and Go module cache.
type nested struct {
	ws       string // the workspace
	userRoot string // its output_user_root
	rcs      []string
	logs     string
}

// setupNested finds the project's sources and the outer Bazel's caches
// from the test's runfiles, and writes the nested Bazel's rc file.
func setupNested(t *testing.T) *nested {
	t.Helper()
	srcdir := os.Getenv("TEST_SRCDIR")
	if srcdir == "" {
		t.Skip("runs only under tools/bazel test: it needs the toolchain root's Bazel")
	}
	// The runfile is a symlink into the source tree: the project's root.
	marker := "build/oci/pull.bzl"
	src, err := filepath.EvalSymlinks(filepath.Join(srcdir, "_main", marker))
	if err != nil {
		t.Fatalf("failed to find the project's sources from runfile %s: %v", marker, err)
	}
	root := strings.TrimSuffix(src, "/"+marker)
	// The test runs in <output_base>/execroot/...; output_base's parent is
	// the output_user_root of tools/bazel, which holds host.bazelrc, the
	// repository cache and (through host.bazelrc) the disk cache.
	outputBase, _, ok := strings.Cut(srcdir, "/execroot/")
	if !ok {
		t.Fatalf("runfiles %s are not under an execroot", srcdir)
	}
	userRoot := filepath.Dir(outputBase)
	hostRC := filepath.Join(userRoot, "host.bazelrc")
	if _, err := os.Stat(hostRC); err != nil {
		t.Fatalf("not run by tools/bazel (build/offline/bazel.sh writes %s): %v", hostRC, err)
	}
	offline, err := os.ReadFile(filepath.Join(root, "build/offline/offline.bazelrc"))
	if err != nil {
		t.Fatal(err)
	}
	scratch, err := os.MkdirTemp(os.Getenv("TEST_TMPDIR"), "nested")
	if err != nil {
		t.Fatal(err)
	}
	n := &nested{ws: filepath.Join(scratch, "ws"), userRoot: filepath.Join(scratch, "bazel"), logs: os.Getenv("TEST_UNDECLARED_OUTPUTS_DIR")}
	if err := os.MkdirAll(n.ws, 0o755); err != nil {
		t.Fatal(err)
	}
	modCache := filepath.Join(outputBase, "external/gazelle~~non_module_deps~bazel_gazelle_go_repository_cache/pkg/mod")
	// The offline layer names files of this project by %workspace%, which
	// the nested Bazel would read as its own workspace.
	rc := strings.ReplaceAll(string(offline), "%workspace%", root) + fmt.Sprintf(`
# Added by build/oci/tests/pull: the outer build's caches.
common --repository_cache=%s
common --repo_env=GO_REPOSITORY_USE_HOST_MODCACHE=1
common --repo_env=GOMODCACHE=%s
build --incompatible_strict_action_env
build --show_progress_rate_limit=30
`, filepath.Join(userRoot, "cache/repos/v1"), modCache)
	overrides, err := outerGoRepos(outputBase)
	if err != nil {
		t.Fatal(err)
	}
	rc += overrides
	n.rcs = []string{filepath.Join(scratch, "pulltest.bazelrc"), hostRC}
	if err := os.WriteFile(n.rcs[0], []byte(rc), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.shutdown(t) })
	return n
}

// outerGoRepos returns --override_repository lines that point the nested
// build's Go module repositories (and gazelle's tools) at the outer build's
// copies, fetched from the same go.mod and go.sum with the same gazelle
// settings: generating them again takes a minute (most of a warm run) and
// tests nothing of the pull path. Only completely fetched ones are used
// (Bazel writes the marker file last); the others are fetched as usual.
func outerGoRepos(outputBase string) (string, error) {
	external := filepath.Join(outputBase, "external")
	ents, err := os.ReadDir(external)
	if err != nil {
		return "", fmt.Errorf("failed to list the outer build's repositories: %w", err)
	}
	var b strings.Builder
	for _, e := range ents {
		n := e.Name()
		reuse := strings.HasPrefix(n, "gazelle~~go_deps~") && !strings.HasSuffix(n, "~bazel_gazelle_go_repository_config") ||
			n == "gazelle~~non_module_deps~bazel_gazelle_go_repository_tools"
		if !reuse || !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(external, "@"+n+".marker")); err != nil {
			continue
		}
		fmt.Fprintf(&b, "common --override_repository=%s=%s\n", n, filepath.Join(external, n))
	}
	return b.String(), nil
}

func (n *nested) bazel(ctx context.Context, args ...string) *exec.Cmd {
	startup := []string{"--output_user_root=" + n.userRoot, "--max_idle_secs=300"}
	for _, rc := range n.rcs {
		startup = append(startup, "--bazelrc="+rc)
	}
	cmd := exec.CommandContext(ctx, "bazel", append(startup, args...)...)
	cmd.Dir = n.ws
	// A clean environment: Bazel's client reads TEST_TMPDIR and friends.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Dir(n.userRoot), "LANG=C.UTF-8"}
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// build runs a nested bazel build; its output goes to the test's
// undeclared outputs (name.log) and is returned.
func (n *nested) build(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := n.bazel(ctx, append([]string{"build", "--keep_going=false"}, args...)...).CombinedOutput()
	t.Logf("nested bazel build %s (%s): %.1f s, err=%v", strings.Join(args, " "), name, time.Since(start).Seconds(), err)
	if n.logs != "" {
		_ = os.WriteFile(filepath.Join(n.logs, name+".log"), out, 0o644)
	}
	return string(out), err
}

func (n *nested) mustBuild(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := n.build(t, name, args...); err != nil {
		t.Fatalf("nested build %s failed: %v\n%s", name, err, tail(out, 60))
	}
}

func (n *nested) shutdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := n.bazel(ctx, "shutdown").CombinedOutput(); err != nil {
		t.Errorf("failed to shut the nested Bazel server down: %v\n%s", err, out)
	}
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func (n *nested) write(t *testing.T, file, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(n.ws, file), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeLock pins the image "base" to repo@digest, narrowed to linux/arm64.
func (n *nested) writeLock(t *testing.T, repo, digest string) {
	t.Helper()
	data, err := json.MarshalIndent(map[string]any{"images": []map[string]any{{
		"name": "base", "image": repo, "digest": digest, "platforms": []string{"linux/arm64"},
	}}}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	n.write(t, "oci.lock.json", string(data)+"\n")
}

const buildFile = `load("@appliance//build/oci:defs.bzl", "layer_tar", "oci_image", "preseed_bundle")

layer_tar(
    name = "hello_layer",
    files = {"hello.txt": "/hello.txt"},
)

# As the README writes it: no os or architecture, the base (narrowed to
# linux/arm64) gives its only platform.
oci_image(
    name = "app",
    base = "@base//:image",
    entrypoint = ["/bin/cat", "/hello.txt"],
    tars = [":hello_layer"],
)

preseed_bundle(
    name = "base_bundle",
    image = "@base//:image",
    reference = "127.0.0.1:5000/test/base:1",
)

preseed_bundle(
    name = "app_bundle",
    image = ":app",
    reference = "127.0.0.1:5000/test/app:1",
)

preseed_bundle(
    name = "mirrored_bundle",
    image = "@mirrored//:image",
    reference = "127.0.0.1:5000/test/mirrored:1",
)
`

// moduleFile uses this project's module from its source tree; the image
// "base" comes from the lock file, "mirrored" from oci.pull with mirrors.
func moduleFile(root, digest string, mirrors []string, origin string) string {
	quoted := make([]string, 0, len(mirrors))
	for _, m := range mirrors {
		quoted = append(quoted, fmt.Sprintf("%q", m))
	}
	return fmt.Sprintf(`module(name = "pulltest")

bazel_dep(name = "appliance")
local_path_override(
    module_name = "appliance",
    path = %q,
)

# The appliance module's Go SDK is a dev dependency: a user names their own.
bazel_dep(name = "rules_go", version = "0.59.0")

go_sdk = use_extension("@rules_go//go:extensions.bzl", "go_sdk")
go_sdk.host()

# As the appliance module does (a root-only tag): the offline build has no
# protobuf rules.
bazel_dep(name = "gazelle", version = "0.43.0")

go_deps = use_extension("@gazelle//:extensions.bzl", "go_deps")
go_deps.gazelle_default_attributes(
    directives = ["gazelle:proto disable_global"],
)

oci = use_extension("@appliance//build/oci:extensions.bzl", "oci")
oci.from_lock(lock = "//:oci.lock.json")
oci.pull(
    name = "mirrored",
    digest = %q,
    image = %q,
    mirrors = [%s],
    platforms = ["linux/arm64"],
)
use_repo(oci, "base", "mirrored")
`, root, digest, origin, strings.Join(quoted, ", "))
}

// projectRoot is the directory local_path_override names.
func projectRoot(t *testing.T) string {
	t.Helper()
	src, err := filepath.EvalSymlinks(filepath.Join(os.Getenv("TEST_SRCDIR"), "_main/build/oci/pull.bzl"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(src, "/build/oci/pull.bzl")
}

func TestPullPathUnderBazel(t *testing.T) {
	n := setupNested(t)
	idx := layouttest.RandomIndex(t, v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "arm64"})
	pinned := registrytest.Digest(t, idx)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var arm64, amd64 v1.Descriptor
	for _, d := range im.Manifests {
		if d.Platform.Architecture == "arm64" {
			arm64 = d
		} else {
			amd64 = d
		}
	}
	armImg, err := idx.Image(arm64.Digest)
	if err != nil {
		t.Fatal(err)
	}
	origin := registrytest.New(t, registrytest.Anonymous)
	repo := origin.PushIndex(t, "test/base:1", idx).Context()
	mirror := registrytest.New(t, registrytest.Anonymous)
	mirrorRepo := mirror.PushIndex(t, "mirror/base:1", idx).Context()

	// A site that reaches only its mirror: the image's own registry and the
	// first mirror are unreachable, the second mirror lacks the image, the
	// third serves it.
	unreachable := registrytest.ClosedAddr(t)
	mirrors := []string{unreachable + "/mirror/base", origin.Host() + "/mirror/missing", mirrorRepo.Name()}
	n.write(t, "MODULE.bazel", moduleFile(projectRoot(t), pinned, mirrors, unreachable+"/origin/base"))
	n.write(t, "BUILD.bazel", buildFile)
	n.write(t, "hello.txt", "hello from the pull test\n")
	n.writeLock(t, repo.Name(), pinned)

	n.mustBuild(t, "pull", "//...")
	base := readBundle(t, filepath.Join(n.ws, "bazel-bin/base_bundle.tar"))
	checkNarrowedBundle(t, "base_bundle", base, pinned, arm64.Digest.String(), amd64.Digest.String(), armImg)
	mirrored := readBundle(t, filepath.Join(n.ws, "bazel-bin/mirrored_bundle.tar"))
	checkNarrowedBundle(t, "mirrored_bundle", mirrored, pinned, arm64.Digest.String(), amd64.Digest.String(), armImg)
	if mirror.ManifestGets() == 0 {
		t.Error("the mirror that holds the image served no manifest")
	}
	checkAppOnBase(t, filepath.Join(n.ws, "bazel-bin/app"), armImg)

	t.Run("credentials from a named config.json", func(t *testing.T) {
		authReg := registrytest.New(t, registrytest.Basic)
		authRepo := authReg.PushIndex(t, "private/base:1", idx).Context()
		n.writeLock(t, authRepo.Name(), pinned)
		out, err := n.build(t, "auth-without-credentials", "//:base_bundle")
		if err == nil || !strings.Contains(out, "401") && !strings.Contains(out, "UNAUTHORIZED") {
			t.Fatalf("build without credentials: want an authentication error, got err=%v\n%s", err, tail(out, 30))
		}
		config := filepath.Join(filepath.Dir(n.ws), "docker", "config.json")
		writeDockerConfig(t, config, authReg.Host())
		n.mustBuild(t, "auth", "--@appliance//build/oci/pull:docker_config="+config, "//:base_bundle")
		checkNarrowedBundle(t, "base_bundle", readBundle(t, filepath.Join(n.ws, "bazel-bin/base_bundle.tar")), pinned, arm64.Digest.String(), amd64.Digest.String(), armImg)
	})

	t.Run("different bytes for the pinned digest", func(t *testing.T) {
		bad := registrytest.New(t, registrytest.Anonymous)
		badRepo := bad.PushIndex(t, "test/base:1", idx).Context()
		layers, err := armImg.Layers()
		if err != nil {
			t.Fatal(err)
		}
		layer := registrytest.Digest(t, layers[0])
		bad.Tamper(layer)
		n.writeLock(t, badRepo.Name(), pinned)
		out, err := n.build(t, "tampered", "//:base_bundle")
		if err == nil {
			t.Fatal("the build accepted a layer that does not match its digest")
		}
		for _, want := range []string{"does not match its digest", layer, badRepo.Name()} {
			if !strings.Contains(out, want) {
				t.Errorf("the build error does not say %q:\n%s", want, tail(out, 30))
			}
		}
	})
}

// TestBadLocksRefusedAsUpdateLockDoes feeds the same bad lock files to the
// Bazel extension (oci.from_lock, Starlark) and to update_lock's parser
// (pull.ReadLock, Go): each must be refused by both, with the same message
// but for how each names the file.
func TestBadLocksRefusedAsUpdateLockDoes(t *testing.T) {
	n := setupNested(t)
	pin := "sha256:" + strings.Repeat("a", 64)
	n.write(t, "MODULE.bazel", moduleFile(projectRoot(t), pin, nil, "127.0.0.1:1/origin/base"))
	n.write(t, "BUILD.bazel", "")
	entry := `{"name": "base", "image": "127.0.0.1:1/a/b", "digest": "` + pin + `"}`
	for name, lock := range map[string]string{
		"duplicate name": `{"images": [` + entry + `, ` + entry + `]}`,
		"unknown field":  `{"images": [{"name": "base", "image": "127.0.0.1:1/a/b", "sha": "1"}]}`,
		"unknown key":    `{"image": []}`,
		"bad digest":     `{"images": [{"name": "base", "image": "127.0.0.1:1/a/b", "digest": "sha256:1"}]}`,
		"bad manifest":   `{"images": [{"name": "base", "image": "127.0.0.1:1/a/b", "digest": "` + pin + `", "manifests": {"linux/amd64": "sha256:AB"}}]}`,
		"no image":       `{"images": [{"name": "base"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "oci.lock.json")
			if err := os.WriteFile(path, []byte(lock), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := pull.ReadLock(path)
			if err == nil {
				t.Fatalf("update_lock's parser accepts %s", lock)
			}
			before, after, ok := strings.Cut(err.Error(), path)
			if !ok {
				t.Fatalf("update_lock's error does not name the file: %v", err)
			}
			n.write(t, "oci.lock.json", lock)
			out, berr := n.bazel(context.Background(), "query", "@base//:all").CombinedOutput()
			if berr == nil {
				t.Fatalf("the extension accepts %s", lock)
			}
			// The extension names the file by its label.
			want := regexp.MustCompile(regexp.QuoteMeta(before) + `\S*oci\.lock\.json` + regexp.QuoteMeta(after))
			if !want.Match(out) {
				t.Errorf("the extension's error is not update_lock's %q:\n%s", err, tail(string(out), 20))
			}
		})
	}
}

func writeDockerConfig(t *testing.T, path, host string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	data := fmt.Sprintf(`{"auths": {%q: {"username": %q, "password": %q}}}`, host, registrytest.User, registrytest.Password)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// bundle is what a bundle tar holds: index.json and its blobs by digest.
type bundle struct {
	index v1.IndexManifest
	blobs map[string][]byte
}

func readBundle(t *testing.T, path string) bundle {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("failed to open bundle: %v", err)
	}
	defer f.Close()
	b := bundle{blobs: map[string][]byte{}}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("bundle %s: %v", path, err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case hdr.Name == "index.json":
			if err := json.Unmarshal(data, &b.index); err != nil {
				t.Fatalf("bundle %s: index.json: %v", path, err)
			}
		case strings.HasPrefix(hdr.Name, "blobs/sha256/"):
			b.blobs["sha256:"+strings.TrimPrefix(hdr.Name, "blobs/sha256/")] = data
		}
	}
	return b
}

// checkNarrowedBundle: the bundle's target is the pinned index, and it
// holds exactly the index, the arm64 manifest, its config and its layers.
func checkNarrowedBundle(t *testing.T, what string, b bundle, pinned, arm64, amd64 string, armImg v1.Image) {
	t.Helper()
	if len(b.index.Manifests) != 1 || b.index.Manifests[0].Digest.String() != pinned {
		t.Fatalf("%s: index.json names %+v, want the pinned index %s", what, b.index.Manifests, pinned)
	}
	if _, ok := b.blobs[amd64]; ok {
		t.Errorf("%s holds the linux/amd64 manifest %s", what, amd64)
	}
	m, err := armImg.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{pinned, arm64, m.Config.Digest.String()}
	for _, l := range m.Layers {
		want = append(want, l.Digest.String())
	}
	var got []string
	for d := range b.blobs {
		got = append(got, d)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s holds blobs %v, want the index, the arm64 manifest, config and layers %v", what, got, want)
	}
}

// checkAppOnBase: the image built on the pulled base starts with the
// base's arm64 layers.
func checkAppOnBase(t *testing.T, layout string, armImg v1.Image) {
	t.Helper()
	var idx v1.IndexManifest
	readJSON(t, filepath.Join(layout, "index.json"), &idx)
	if len(idx.Manifests) != 1 {
		t.Fatalf("app layout names %d manifests, want 1", len(idx.Manifests))
	}
	var m v1.Manifest
	readJSON(t, filepath.Join(layout, "blobs/sha256", idx.Manifests[0].Digest.Hex), &m)
	base, err := armImg.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != len(base.Layers)+1 {
		t.Fatalf("app has %d layers, want the base's %d and one more", len(m.Layers), len(base.Layers))
	}
	for i, l := range base.Layers {
		if m.Layers[i].Digest != l.Digest {
			t.Errorf("app layer %d is %s, want the base's %s", i, m.Layers[i].Digest, l.Digest)
		}
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
