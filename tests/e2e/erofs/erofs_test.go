// Package erofs_test boots the E2E appliance whose images come from the
// EROFS layer cache the build made, with two faults put in after the build:
// one byte of the hello program flipped in hello's cached layer, and
// hello-web's layer without its dm-verity sidecar. It proves that cached
// layers come out of the kernel's EROFS and overlay right (whiteout, opaque
// directory, hard link, symlink), that an image with uncached layers is
// converted on the node and runs, that the missing sidecar fails that one
// bundle by name, and that the flipped byte fails only hello's container,
// with an I/O error and a log line naming the layer, while the others run.
package erofs_test

import (
	"context"
	"fmt"
	"os"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/preseed/status"
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

func TestCachedLayersAndBadCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	flipped, unsigned := topLayer(t, "hello"), topLayer(t, "hello-web")
	for _, e := range manifest(t).Bundles {
		if e.Name == "uncached" && len(e.CachedLayers) != 0 {
			t.Fatalf("the uncached bundle lists cached layers: %+v", e.CachedLayers)
		}
	}
	n := node.Boot(ctx, t)
	st := n.PreseedStatus(ctx)
	t.Logf("preseed done %s after QEMU start: imported %d, failed %d", n.Since(), st.Imported, st.Failed)
	checkStatus(t, st, unsigned)

	if exit, log := n.RunPod(ctx, t, "layers", layersImage, layersOK); exit != 0 {
		t.Errorf("layers pod (cached layers) exited with %d, want 0; log: %s", exit, log)
	}
	checkCorrupt(ctx, t, n, flipped)
	// After the I/O error: an image whose top layer the node converted.
	if exit, log := n.RunPod(ctx, t, "uncached", uncachedImage, layersOK); exit != 0 {
		t.Errorf("uncached pod (layer converted on the node) exited with %d, want 0; log: %s", exit, log)
	}
}

// checkStatus wants every bundle imported but hello-web, refused for its
// missing sidecar, by name.
func checkStatus(t *testing.T, st *status.Status, unsigned bundleformat.CachedLayer) {
	t.Helper()
	for _, b := range st.Bundles {
		web := path.Base(b.File) == "hello-web.tar"
		switch {
		case web && b.Result != status.ResultFailed:
			t.Errorf("hello-web.tar without its sidecar: result %s, want failed", b.Result)
		case web:
			sidecar := unsigned.Path + ".dmverity"
			if !strings.Contains(b.Error, sidecar) || !strings.Contains(b.Error, string(unsigned.DiffID)) {
				t.Errorf("hello-web.tar refused for %q, want the error to name %s and diffID %s", b.Error, sidecar, unsigned.DiffID)
			}
			t.Logf("the node reports: %s: %s", b.File, b.Error)
		case b.Result != status.ResultImported:
			t.Errorf("%s: result %s (%s), want imported", b.File, b.Result, b.Error)
		}
	}
	if st.Imported != 4 || st.Failed != 1 {
		t.Errorf("preseed imported %d and failed %d, want 4 and 1: %+v", st.Imported, st.Failed, st.Bundles)
	}
}

// checkCorrupt starts hello, whose program's first block was changed in
// the cache: dm-verity must refuse the read (an I/O error, not the changed
// bytes), and the node must log the layer.
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
		return strings.Contains(l, "corrupt") && strings.Contains(l, flipped.DiffID.Encoded())
	})
	if werr != nil {
		t.Fatal(werr)
	}
	t.Logf("the node logs: %s", line)
}
