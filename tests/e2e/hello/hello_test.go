// Package hello_test is the E2E proof: the appliance (E2E variant) boots
// under QEMU with no route out of the VM, imports its preseeded bundles, and
// pods run from them without any PullImage call, by every name a user may
// give: the hello index by tag, by its index digest and by its platform
// manifest digest, and an image that came from a tarball by tag. The
// node's kubelet is off: it would stop the test's pods, which it did not
// start (tests/e2e/staticpods proves the kubelet's own pods).
package hello_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/tests/e2e/node"
	"github.com/appliance-bundler/appliance/tests/launch"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// The image of //build/oci/tests/tarball:bundle, read from a docker-save
// tarball by oci_from_tarball, and what it prints.
const (
	tarballImage    = "docker.io/library/hello-tarball:1.0"
	tarballGreeting = "Hello world from an image tarball"
)

func TestHelloPodFromPreseededImagesOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	hello := manifestEntry(t, node.HelloImage)
	n := node.Boot(ctx, t)
	if _, err := n.VM.WaitForLine(ctx, "containerd ready", launch.LogMessage("supervisor.root.containerd", "containerd ready")); err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd up %s after QEMU start", n.Since())
	st := n.PreseedStatus(ctx)
	t.Logf("preseed done %s after QEMU start: imported %d, skipped %d, failed %d", n.Since(), st.Imported, st.Skipped, st.Failed)
	if st.Imported != 3 || st.Failed != 0 {
		t.Errorf("preseed imported %d and failed %d, want 3 and 0: %+v", st.Imported, st.Failed, st.Bundles)
	}
	n.CheckPreseededImages(ctx, t, node.HelloImage, node.PauseImage, tarballImage)

	byIndex, byManifest := digestNames(t, hello)
	checkRepoDigests(ctx, t, n, node.HelloImage, byIndex, byManifest)
	for _, p := range []struct{ pod, image, want string }{
		{"hello", node.HelloImage, node.Greeting},
		{"hello-by-index", byIndex, node.Greeting},
		{"hello-by-manifest", byManifest, node.Greeting},
		{"hello-tarball", tarballImage, tarballGreeting},
	} {
		exit, log := n.RunPod(ctx, t, p.pod, p.image, p.want)
		if exit != 0 {
			t.Errorf("pod %s (image %s) exited with %d, want 0; log: %s", p.pod, p.image, exit, log)
		}
		t.Logf("pod %s ran image %s; its log: %q", p.pod, p.image, log)
	}
}

// manifestEntry is the build's preseed manifest entry of the image ref.
func manifestEntry(t *testing.T, ref string) bundleformat.Entry {
	t.Helper()
	data, err := os.ReadFile(runfile.Path(t, "PRESEED_JSON"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundleformat.ParseManifest(data)
	if err != nil {
		t.Fatalf("preseed manifest: %v", err)
	}
	for _, e := range m.Bundles {
		if e.Reference == ref {
			return e
		}
	}
	t.Fatalf("the preseed manifest has no bundle of %s", ref)
	return bundleformat.Entry{}
}

// digestNames are the image's names by its index digest (what a pin
// records) and by the digest of its linux/amd64 manifest (what runs), as
// the build's manifest lists them.
func digestNames(t *testing.T, e bundleformat.Entry) (string, string) {
	t.Helper()
	if !bundleformat.IsIndex(e.Target.MediaType) {
		t.Fatalf("%s is a %s, want an image index", e.Reference, e.Target.MediaType)
	}
	var amd64 []string
	for _, m := range e.Manifests {
		if m.Platform != nil && bundleformat.FormatPlatform(*m.Platform) == "linux/amd64" {
			amd64 = append(amd64, m.Digest.String())
		}
	}
	if len(amd64) != 1 {
		t.Fatalf("%s has %d linux/amd64 manifests, want 1: %+v", e.Reference, len(amd64), e.Manifests)
	}
	refs, err := bundleformat.References(e.Reference, e.Target.Digest)
	if err != nil {
		t.Fatal(err)
	}
	repo := strings.TrimSuffix(refs[1], e.Target.Digest.String())
	byIndex, byManifest := repo+e.Target.Digest.String(), repo+amd64[0]
	for _, want := range []string{byIndex, byManifest} {
		if !slices.Contains(e.References, want) {
			t.Errorf("the preseed manifest lists references %q for %s, without %s", e.References, e.Reference, want)
		}
	}
	return byIndex, byManifest
}

// checkRepoDigests checks that the CRI lists the image tagged tag, pinned,
// with each of digests in its RepoDigests.
func checkRepoDigests(ctx context.Context, t *testing.T, n *node.Node, tag string, digests ...string) {
	t.Helper()
	resp, err := n.Images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatalf("ListImages: %v", err)
	}
	for _, img := range resp.Images {
		t.Logf("CRI image %s: RepoTags %q, RepoDigests %q, pinned %t", img.Id, img.RepoTags, img.RepoDigests, img.Pinned)
		if !slices.Contains(img.RepoTags, tag) {
			continue
		}
		for _, d := range digests {
			if !slices.Contains(img.RepoDigests, d) {
				t.Errorf("CRI image %s (%s) has RepoDigests %q, without %s", img.Id, tag, img.RepoDigests, d)
			}
		}
		return
	}
	t.Errorf("the CRI lists no image tagged %s", tag)
}

// BenchmarkPodStart measures a pod's start on the booted node: from
// RunPodSandbox to StartContainer's return for a hello pod, which mounts the
// pause and hello layers from the EROFS cache. The node boots once; each
// pod is removed outside the timer, so each start mounts its layers anew.
// Run it with:
//
//	tools/bazel test //tests/e2e/hello:hello_test --test_output=streamed \
//	  --test_arg=-test.run=^$ --test_arg=-test.bench=PodStart --test_arg=-test.benchtime=10x
func BenchmarkPodStart(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	n := node.Boot(ctx, b)
	if st := n.PreseedStatus(ctx); st.Failed != 0 {
		b.Fatalf("preseed failed %d bundles: %+v", st.Failed, st.Bundles)
	}
	pods := 0
	b.Run("hello", func(b *testing.B) {
		for range b.N {
			pods++
			name := fmt.Sprintf("bench-%d", pods)
			b.StartTimer()
			id, err := n.StartPod(ctx, b, name, node.HelloImage)
			b.StopTimer()
			if err != nil {
				b.Fatalf("StartContainer %s: %v", name, err)
			}
			if st := n.WaitExited(ctx, b, name, id); st.ExitCode != 0 {
				b.Fatalf("pod %s exited with %d", name, st.ExitCode)
			}
			removePods(ctx, b, n)
		}
	})
}

// removePods stops and removes every pod sandbox of the node.
func removePods(ctx context.Context, b *testing.B, n *node.Node) {
	b.Helper()
	resp, err := n.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		b.Fatalf("ListPodSandbox: %v", err)
	}
	for _, p := range resp.Items {
		if _, err := n.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			b.Fatalf("StopPodSandbox %s: %v", p.Id, err)
		}
		if _, err := n.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			b.Fatalf("RemovePodSandbox %s: %v", p.Id, err)
		}
	}
}
