// Package erofs_test boots the E2E appliance whose images come from the
// EROFS layer cache the build made, from a disk whose system partition was
// changed after the build: one byte flipped in /usr/bin/kubelet and one in
// the hello program of hello's cached layer. It proves that cached layers
// come out of the kernel's EROFS and overlay right (whiteout, opaque
// directory, hard link, symlink), that an image with uncached layers is
// converted on the node and runs, and that each flipped byte fails only
// what reads it, with an I/O error and a log line naming the file (and the
// layer), while the rest runs.
package erofs_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/tests/e2e/node"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

const (
	layersImage   = "docker.io/library/layers:1.0"
	uncachedImage = "docker.io/library/uncached:1.0"
	layersOK      = "layers ok"
)

// manifest is the tree's preseed manifest.
func manifest(t *testing.T) *bundleformat.Manifest {
	t.Helper()
	b, err := os.ReadFile(runfile.Path(t, "PRESEED_JSON"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundleformat.ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// topLayer is the top cached layer of the bundle named name.
func topLayer(t *testing.T, name string) bundleformat.CachedLayer {
	t.Helper()
	for _, e := range manifest(t).Bundles {
		if e.Name == name && len(e.CachedLayers) > 0 {
			return e.CachedLayers[len(e.CachedLayers)-1]
		}
	}
	t.Fatalf("the manifest has no bundle %s with cached layers", name)
	return bundleformat.CachedLayer{}
}

func TestCachedLayersAndCorruptSystem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	flipped := topLayer(t, "hello")
	for _, e := range manifest(t).Bundles {
		if e.Name == "uncached" && len(e.CachedLayers) != 0 {
			t.Fatalf("the uncached bundle lists cached layers: %+v", e.CachedLayers)
		}
	}
	// The kubelet is on, so that init starts its corrupted binary; it
	// never runs, so it stops none of the test's pods.
	n := node.BootWith(ctx, t, node.Extra{Kubelet: true})
	checkKubelet(ctx, t, n)
	st := n.PreseedStatus(ctx)
	t.Logf("preseed done %s after QEMU start: imported %d, failed %d", n.Since(), st.Imported, st.Failed)
	if st.Imported != 5 || st.Failed != 0 {
		t.Errorf("preseed imported %d and failed %d, want 5 and 0: %+v", st.Imported, st.Failed, st.Bundles)
	}

	if exit, log := n.RunPod(ctx, t, "layers", layersImage, layersOK); exit != 0 {
		t.Errorf("layers pod (cached layers) exited with %d, want 0; log: %s", exit, log)
	}
	checkCorrupt(ctx, t, n, flipped)
	// After the I/O error: an image whose top layer the node converted.
	if exit, log := n.RunPod(ctx, t, "uncached", uncachedImage, layersOK); exit != 0 {
		t.Errorf("uncached pod (layer converted on the node) exited with %d, want 0; log: %s", exit, log)
	}
}

// checkKubelet wants the kubelet, whose binary's first block was changed
// on the system partition, to fail to start with an I/O error, and the
// node to log the file.
func checkKubelet(ctx context.Context, t *testing.T, n *node.Node) {
	t.Helper()
	line, err := n.VM.WaitForLine(ctx, "the kubelet failing to start", func(l string) bool {
		return strings.Contains(l, "kubelet") && strings.Contains(l, "input/output error")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the kubelet fails: %s", line)
	line, err = n.VM.WaitForLine(ctx, "dm-verity corruption logged with the kubelet's file", func(l string) bool {
		return strings.Contains(l, "corrupted block in the system partition") && strings.Contains(l, `"file": "/usr/bin/kubelet"`)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the node logs: %s", line)
}

// checkCorrupt starts hello, whose program's first block was changed in
// its cached layer on the system partition: dm-verity must refuse the read
// (an I/O error, not the changed bytes), and the node must log the layer.
func checkCorrupt(ctx context.Context, t *testing.T, n *node.Node, flipped bundleformat.CachedLayer) {
	t.Helper()
	from := len(n.VM.Lines())
	id, err := n.StartPod(ctx, t, "hello", node.HelloImage)
	if err == nil {
		st := n.WaitExited(ctx, t, "hello", id)
		log, _ := n.PodLog(ctx, node.PodLogPath("hello"))
		if st.ExitCode == 0 || strings.Contains(log, node.Greeting) {
			t.Fatalf("hello ran from a corrupted layer: exit %d, log %q", st.ExitCode, log)
		}
		err = fmt.Errorf("exit %d, reason %s: %s; log %q", st.ExitCode, st.Reason, st.Message, log)
	}
	if !strings.Contains(err.Error(), "input/output error") {
		t.Errorf("hello from a corrupted layer failed with %v, want an input/output error", err)
	}
	t.Logf("hello from a corrupted layer: %v", err)
	line, werr := n.VM.WaitForLineFrom(ctx, from, "dm-verity corruption logged with the layer", func(l string) bool {
		return strings.Contains(l, "corrupted block in the system partition") && strings.Contains(l, flipped.DiffID.Encoded()) &&
			strings.Contains(l, `"layer_file"`)
	})
	if werr != nil {
		t.Fatal(werr)
	}
	t.Logf("the node logs: %s", line)
}
