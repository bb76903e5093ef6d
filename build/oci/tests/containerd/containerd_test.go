// Package containerd imports the bundles that images/ builds into a real
// containerd (the Bazel-built static binary, started as root on a temporary
// root) with `ctr images import` and with client.Import, and checks the
// names, namespaces and targets containerd records. It must not depend on
// anything outside the test's temporary directories.
package containerd

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/tests/containerdtest"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

const (
	helloRef = "docker.io/library/hello:1.0"
	pauseRef = "localhost/appliance/pause:1.0"
)

func inspect(t *testing.T, env string) (string, *bundleformat.Entry) {
	t.Helper()
	p := runfile.Path(t, env)
	info, err := bundle.Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, info
}

// ctr runs the Bazel-built ctr against the test daemon.
func ctr(t *testing.T, d *containerdtest.Daemon, ns string, args ...string) string {
	t.Helper()
	full := append([]string{"--address", d.Address, "--namespace", ns}, args...)
	cmd := exec.Command(runfile.Path(t, "CTR"), full...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("ctr %s failed: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// expectImage checks that ns has exactly the images want (name → target
// digest), besides the image-ID references ("sha256:<config>") that the
// CRI plugin adds for every image it sees in k8s.io.
func expectImage(t *testing.T, c *client.Client, ns string, want map[string]string) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	imgs, err := c.ImageService().List(ctx)
	if err != nil {
		t.Fatalf("failed to list images in %s: %v", ns, err)
	}
	got := map[string]string{}
	for _, i := range imgs {
		if strings.HasPrefix(i.Name, "sha256:") && i.Labels["io.cri-containerd.image"] == "managed" {
			continue
		}
		got[i.Name] = i.Target.Digest.String()
	}
	if len(got) != len(want) {
		t.Errorf("namespace %s has images %v, want %v", ns, got, want)
	}
	for n, dg := range want {
		if got[n] != dg {
			t.Errorf("namespace %s: image %s has target %q, want %s (all: %v)", ns, n, got[n], dg, got)
		}
	}
}

func TestImportIntoContainerd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test starts containerd and needs root; the project's tests run as root")
	}
	d := containerdtest.Start(t)
	c := d.Client(t)
	helloTar, hello := inspect(t, "HELLO_BUNDLE")
	helloZst, helloZ := inspect(t, "HELLO_BUNDLE_ZSTD")
	pauseTar, pause := inspect(t, "PAUSE_BUNDLE")
	if hello.Reference != helloRef || pause.Reference != pauseRef || helloZ.Target.Digest != hello.Target.Digest {
		t.Fatalf("bundles name %q, %q, %q", hello.Reference, pause.Reference, helloZ.Reference)
	}

	// ctr images import, through the transfer service, unpacking.
	out := ctr(t, d, "k8s.io", "images", "import", "--snapshotter", d.Snapshotter, helloTar)
	t.Logf("ctr images import:\n%s", out)
	expectImage(t, c, "k8s.io", map[string]string{helloRef: hello.Target.Digest.String()})
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	img, err := c.GetImage(ctx, helloRef)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := img.IsUnpacked(ctx, d.Snapshotter); err != nil || !ok {
		t.Errorf("%s was not unpacked into %s by ctr import (%v)", helloRef, d.Snapshotter, err)
	}
	if ls := ctr(t, d, "k8s.io", "images", "ls", "-q"); !strings.Contains(ls, helloRef) {
		t.Errorf("ctr images ls does not list %s:\n%s", helloRef, ls)
	}

	// client.Import of the unchanged file: a bundle stays importable by
	// containerd's own importer (core/preseed walks the tar itself instead;
	// see ingest in core/preseed/ingest.go).
	f, err := os.Open(pauseTar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	imported, err := c.Import(ctx, f)
	if err != nil {
		t.Fatalf("client.Import of %s failed: %v", pauseTar, err)
	}
	if len(imported) != 1 || imported[0].Name != pauseRef {
		t.Errorf("client.Import made %+v, want one image %s", imported, pauseRef)
	}
	expectImage(t, c, "k8s.io", map[string]string{
		helloRef: hello.Target.Digest.String(),
		pauseRef: pause.Target.Digest.String(),
	})

	// A zstd bundle: ctr decompresses it itself; client.Import reads a tar,
	// so the importer decompresses first.
	ctr(t, d, "zstd-ctr", "images", "import", "--no-unpack", helloZst)
	expectImage(t, c, "zstd-ctr", map[string]string{helloRef: hello.Target.Digest.String()})
	zf, err := os.Open(helloZst)
	if err != nil {
		t.Fatal(err)
	}
	defer zf.Close()
	zr, err := bundle.Decompress(zf)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if _, err := c.Import(namespaces.WithNamespace(context.Background(), "zstd-client"), zr); err != nil {
		t.Fatalf("client.Import of decompressed %s failed: %v", helloZst, err)
	}
	expectImage(t, c, "zstd-client", map[string]string{helloRef: hello.Target.Digest.String()})

	// Nothing landed anywhere else.
	expectImage(t, c, "default", map[string]string{})
}
