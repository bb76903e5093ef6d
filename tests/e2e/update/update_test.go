// Package update_test boots release 1 of an appliance through OVMF and
// systemd-boot, with a release server on the host's loopback forwarded into
// the guest, and takes it through updates: payloads refused (another key,
// changed bytes, an older version) with the running slot untouched; an
// update to release 2 cut by a power loss while the other slot is being
// written, then completed, with the data partition and the images kept and
// the image 2 no longer has unpinned; and release 3, never healthy, rolled
// back to 2 by the appliance itself, with 2's image set again.
package update_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bazelbuild/rules_go/go/runfiles"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/appliance-bundler/appliance/core/disklayout"
	preseedstatus "github.com/appliance-bundler/appliance/core/preseed/status"
	"github.com/appliance-bundler/appliance/core/updatepayload"
	"github.com/appliance-bundler/appliance/core/updater/status"
	"github.com/appliance-bundler/appliance/tests/e2e/node"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// releaseServer is where the appliance polls (the build's update source).
const releaseServer = "10.0.2.100:80"

// server serves one payload directory at a time, swapped whole.
type server struct{ dir atomic.Pointer[string] }

func (s *server) publish(dir string) { s.dir.Store(&dir) }

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	dir := s.dir.Load()
	if dir == nil {
		http.NotFound(w, r)
		return
	}
	http.FileServer(http.Dir(*dir)).ServeHTTP(w, r)
}

// payloadDir is the directory of the payload files in $env.
func payloadDir(t *testing.T, env string) string {
	t.Helper()
	for _, p := range strings.Fields(os.Getenv(env)) {
		if filepath.Base(p) == updatepayload.ManifestFile {
			path, err := runfiles.Rlocation(p)
			if err != nil {
				t.Fatal(err)
			}
			return filepath.Dir(path)
		}
	}
	t.Fatalf("$%s names no %s", env, updatepayload.ManifestFile)
	return ""
}

// corrupted copies dir with one byte of the system image changed.
func corrupted(t *testing.T, dir string) string {
	t.Helper()
	out := t.TempDir()
	for _, name := range []string{updatepayload.ManifestFile, updatepayload.SignatureFile, updatepayload.SystemFile, updatepayload.UKIFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == updatepayload.SystemFile {
			b[len(b)/2] ^= 0xff
		}
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// sumAt is the sha256 of n bytes of path at off.
func sumAt(t *testing.T, path string, off, n int64) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// waitStatus waits until the update status satisfies ok.
func waitStatus(ctx context.Context, t *testing.T, n *node.Node, what string, ok func(status.Status) error) status.Status {
	t.Helper()
	var st status.Status
	node.Eventually(ctx, t, what, func(ctx context.Context) error {
		var err error
		if st, err = n.UpdateStatus(ctx); err != nil {
			return err
		}
		return ok(st)
	})
	return st
}

// lastIs checks the last update's version and result, and that its reason
// says want.
func lastIs(version, result, want string) func(status.Status) error {
	return func(st status.Status) error {
		if st.Last == nil || st.Last.Version != version || st.Last.Result != result || !strings.Contains(st.Last.Reason, want) {
			return fmt.Errorf("last update %+v, want %s %s (%q)", st.Last, version, result, want)
		}
		return nil
	}
}

// running checks the running version and slot.
func running(version, slot string) func(status.Status) error {
	return func(st status.Status) error {
		if st.Version != version || st.Slot != slot {
			return fmt.Errorf("running %s in %s, want %s in %s", st.Version, st.Slot, version, slot)
		}
		return nil
	}
}

// helloPinned tells whether the CRI lists hello's image, and pinned.
func helloPinned(ctx context.Context, t *testing.T, n *node.Node) (present, pinned bool) {
	t.Helper()
	resp, err := n.Images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatalf("ListImages: %v", err)
	}
	for _, img := range resp.Images {
		if slices.Contains(img.RepoTags, node.HelloImage) {
			return true, img.Pinned
		}
	}
	return false, false
}

// checkHelloUnpinned checks that release 2's preseed unpinned hello's
// image, which the release before it preseeded and 2 does not, and kept
// the others (skipped: already imported).
func checkHelloUnpinned(ctx context.Context, t *testing.T, n *node.Node, after string) {
	t.Helper()
	pre := n.PreseedStatus(ctx)
	unpinned := slices.ContainsFunc(pre.Unpinned, func(i preseedstatus.Image) bool { return i.Name == node.HelloImage })
	if !unpinned || pre.Failed != 0 || pre.Skipped != 2 {
		t.Errorf("preseed of release 2 after %s: %d imported, %d skipped, %d failed, unpinned %+v; want hello's image unpinned and the 2 others kept", after, pre.Imported, pre.Skipped, pre.Failed, pre.Unpinned)
	}
	if _, pinned := helloPinned(ctx, t, n); pinned {
		t.Errorf("after %s, hello's image is still pinned", after)
	}
}

// helloWeb waits until hello-web answers with release v's greeting.
func helloWeb(ctx context.Context, t *testing.T, n *node.Node, v string) {
	t.Helper()
	node.Eventually(ctx, t, "hello-web of release "+v, func(ctx context.Context) error {
		body, err := n.HelloWeb(ctx)
		if err == nil && !strings.Contains(body, "("+v+")") {
			err = fmt.Errorf("hello-web answered %q, not release %s's", body, v)
		}
		return err
	})
}

// machineID is the machine ID that the node's last boot logged: it lives
// on the data partition.
func machineID(t *testing.T, n *node.Node) string {
	t.Helper()
	lines := n.VM.Lines()
	for i := len(lines) - 1; i >= 0; i-- {
		if _, rest, ok := strings.Cut(lines[i], "machine_id"); ok && strings.Contains(lines[i], "machine ID") {
			id, _, _ := strings.Cut(strings.TrimLeft(rest, ` :="`), `"`)
			return id
		}
	}
	t.Fatal("no machine ID logged")
	return ""
}

func TestUpdate(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 14*time.Minute)
	defer cancel()
	srv := &server{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(l, srv)
	defer l.Close()
	state := filepath.Join(t.TempDir(), "disk.raw")
	extra := node.Extra{
		State: state, Kubelet: true, Reboot: true, Timeout: 14 * time.Minute,
		GuestForward: map[string]string{releaseServer: l.Addr().String()},
	}
	v1System, err := os.Stat(runfile.Path(t, "V1_SYSTEM"))
	if err != nil {
		t.Fatal(err)
	}

	n := node.BootWith(ctx, t, extra)
	helloWeb(ctx, t, n, "v1")
	waitStatus(ctx, t, n, "release 1 running in slot A", running("1", disklayout.SystemA))
	id := machineID(t, n)
	n.PreseedStatus(ctx)
	if present, pinned := helloPinned(ctx, t, n); !present || !pinned {
		t.Errorf("release 1: hello's image present %v, pinned %v; want both", present, pinned)
	}
	slotA, _ := node.Partition(t, state, disklayout.SystemA)
	slotAWas := sumAt(t, state, slotA, v1System.Size())

	// Refused: another key; a system image whose bytes are not the
	// manifest's. The running slot is never written.
	srv.publish(payloadDir(t, "V2_OTHER_KEY"))
	waitStatus(ctx, t, n, "v2 of another key refused", lastIs("", status.ResultRefused, "does not verify"))
	srv.publish(corrupted(t, payloadDir(t, "V2")))
	waitStatus(ctx, t, n, "v2 with changed bytes refused", lastIs("2", status.ResultRefused, "does not match the manifest"))
	if sumAt(t, state, slotA, v1System.Size()) != slotAWas {
		t.Fatal("a refused payload changed the running slot")
	}

	// A power cut while slot B is being written: release 1 boots again,
	// and the update completes.
	slotB, _ := node.Partition(t, state, disklayout.SystemB)
	from := len(n.VM.Lines())
	srv.publish(payloadDir(t, "V2"))
	if _, err := n.VM.WaitForLineFrom(ctx, from, "writing the system", func(l string) bool { return strings.Contains(l, "writing the system") }); err != nil {
		t.Fatal(err)
	}
	node.Eventually(ctx, t, "slot B being written", func(context.Context) error {
		if sumAt(t, state, slotB+1024, 4096) == sha256.Sum256(make([]byte, 4096)) {
			return errors.New("slot B's first blocks are still empty")
		}
		return nil
	})
	n.VM.Kill()
	t.Log("power cut while slot B was being written")
	if sumAt(t, state, slotA, v1System.Size()) != slotAWas {
		t.Fatal("the update wrote the running slot")
	}

	n = node.BootWith(ctx, t, extra)
	waitStatus(ctx, t, n, "release 1 back after the power cut", running("1", disklayout.SystemA))
	found, err := n.VM.WaitForLine(ctx, "update found", func(l string) bool { return strings.Contains(l, "update found") })
	if err != nil {
		t.Fatal(err)
	}
	foundAt := time.Now()
	t.Logf("after the power cut: %s", found)
	installed, err := n.VM.WaitForLine(ctx, "update installed", func(l string) bool { return strings.Contains(l, "update installed") })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("installed: %s", installed)
	helloWeb(ctx, t, n, "v2")
	t.Logf("update found → release 2's hello-web answering: %s", time.Since(foundAt).Round(100*time.Millisecond))
	st := waitStatus(ctx, t, n, "release 2 committed in slot B", func(st status.Status) error {
		if err := running("2", disklayout.SystemB)(st); err != nil {
			return err
		}
		return lastIs("2", status.ResultCommitted, "")(st)
	})
	t.Logf("status: %+v", *st.Last)
	if got := machineID(t, n); got != id {
		t.Errorf("machine ID %s after the update, %s before: the data partition was not kept", got, id)
	}
	checkHelloUnpinned(ctx, t, n, "the update")

	// Older than the running release: refused.
	srv.publish(payloadDir(t, "V1"))
	waitStatus(ctx, t, n, "v1 refused on v2", lastIs("1", status.ResultRefused, "older than the running"))

	// Release 3 never becomes healthy: tried once, rolled back to 2 by the
	// appliance, reported failed and not tried again.
	from = len(n.VM.Lines())
	srv.publish(payloadDir(t, "V3"))
	if _, err := n.VM.WaitForLineFrom(ctx, from, "on trial", func(l string) bool { return strings.Contains(l, "on trial") }); err != nil {
		t.Fatal(err)
	}
	trialAt := time.Now()
	if _, err := n.VM.WaitForLineFrom(ctx, from, "rolling back", func(l string) bool { return strings.Contains(l, "rolling back") }); err != nil {
		t.Fatal(err)
	}
	rollbackAt := time.Now()
	helloWeb(ctx, t, n, "v2")
	t.Logf("release 3 on trial → rolled back (health timeout) %s; → release 2's hello-web answering %s",
		rollbackAt.Sub(trialAt).Round(100*time.Millisecond), time.Since(rollbackAt).Round(100*time.Millisecond))
	st = waitStatus(ctx, t, n, "release 3 reported failed", func(st status.Status) error {
		if err := running("2", disklayout.SystemB)(st); err != nil {
			return err
		}
		if !st.HasFailed("3") {
			return fmt.Errorf("failed versions %q, want 3 among them", st.Failed)
		}
		return lastIs("3", status.ResultFailed, "not healthy")(st)
	})
	t.Logf("status: %+v", *st.Last)
	checkHelloUnpinned(ctx, t, n, "the rollback from 3")
	if _, err := n.VM.WaitForLineFrom(ctx, from, "release 3 skipped", func(l string) bool { return strings.Contains(l, "this version failed before") }); err != nil {
		t.Fatal(err)
	}
	if err := n.VM.PowerDown(ctx); err != nil {
		t.Fatal(err)
	}
}
