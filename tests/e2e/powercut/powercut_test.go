// Package powercut_test cuts the power (SIGKILL to QEMU) at one point of the
// first boot's import of the preseeded bundles, over a disk kept across
// boots (its data partition holds containerd's state), then boots again
// over that disk: preseed must finish with nothing
// failed, every image of the tree must be there, pinned and whole (no
// half-registered image), and pods of the big image and of hello must run,
// without any pull. One more point (after-machine-id) cuts the power right
// after init wrote the machine ID to the data partition: the next boot must
// find the same ID. Each kill point is its own test target (KILL_POINT), so
// they run in parallel; the serial console and where the kill landed are in
// the test log.
package powercut_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/appliance-bundler/appliance/core/preseed/status"
	"github.com/appliance-bundler/appliance/tests/e2e/node"
	"github.com/appliance-bundler/appliance/tests/e2e/powercut/bigdata"
	"github.com/appliance-bundler/appliance/tests/launch"
)

// What the tree holds (BUILD.bazel).
const (
	bigImage  = "docker.io/library/powercut-big:1.0"
	bigBundle = "/big.tar"
	bundles   = 3
	// preseedLogger names preseed's log lines (and prefixes its children's).
	preseedLogger = "supervisor.root.containerd.preseed"
	// writeback makes the first boot's kernel write dirty pages back after
	// 2 s instead of 30 s, so that what the guest wrote up to about 3 s
	// before the power cut is on the disk: a partial layer, not only an
	// empty ingest, for the next boot to clean up.
	writeback = "sysctl.vm.dirty_expire_centisecs=200 sysctl.vm.dirty_writeback_centisecs=100"
)

// event is one of preseed's import-progress log lines (/work/notes/events.md
// has the contract; core/preseed logs them).
type event struct {
	Logger, Msg   string
	File, Image   string
	Digest, Ref   string
	Lease         string
	Size          int64
	Offset, Total int64
	Ts            time.Time
}

// parseEvent parses a serial line as one of preseed's log lines.
func parseEvent(line string) (event, bool) {
	var e event
	if json.Unmarshal([]byte(line), &e) != nil || !strings.HasPrefix(e.Logger, preseedLogger) {
		return event{}, false
	}
	return e, true
}

// String is the event's message and its non-empty fields.
func (e event) String() string {
	s := e.Msg
	for _, f := range []struct{ k, v string }{{"file", e.File}, {"image", e.Image}, {"digest", e.Digest}, {"ref", e.Ref}, {"lease", e.Lease}} {
		if f.v != "" {
			s += fmt.Sprintf(" %s=%s", f.k, f.v)
		}
	}
	if e.Size != 0 {
		s += fmt.Sprintf(" size=%d", e.Size)
	}
	if e.Msg == "interrupted ingest discarded" {
		s += fmt.Sprintf(" offset=%d total=%d", e.Offset, e.Total)
	}
	return s
}

// isBigLayer tells whether e is about the big file's layer: a layer of the
// big bundle of at least the file's size (its gzip of random data is not
// smaller).
func (e event) isBigLayer() bool {
	return strings.HasSuffix(e.File, bigBundle) && e.Size >= bigdata.Size
}

// killPoint is where in the first boot's import the power is cut: right
// after an event, with no wait, so that the cut lands where the event says
// whatever the speed of the guest (TCG or KVM).
type killPoint struct {
	// on is the event the kill follows.
	on func(event) bool
	// notYet is an event that must not have been printed when the power
	// went: it would mean the kill landed after the point.
	notYet func(event) bool
	what   string
}

func killPoints() map[string]killPoint {
	return map[string]killPoint{
		"before-layer": {
			on:     func(e event) bool { return e.Msg == "bundle import started" && strings.HasSuffix(e.File, bigBundle) },
			notYet: func(e event) bool { return e.Msg == "layer ingest started" && e.isBigLayer() },
			what:   "on the big bundle's import start, before its big layer",
		},
		"mid-layer": {
			on:     func(e event) bool { return e.Msg == "layer ingest progress" && e.isBigLayer() && e.Offset*2 >= e.Size },
			notYet: func(e event) bool { return e.Msg == "layer ingested" && e.isBigLayer() },
			what:   "halfway through the big layer's ingest",
		},
		"mid-unpack": {
			on:     func(e event) bool { return e.Msg == "unpack started" && e.Image == bigImage },
			notYet: func(e event) bool { return e.Msg == "unpack finished" && e.Image == bigImage },
			what:   "during the big image's unpack (right at its start: preseed has no event inside it)",
		},
		"after-register": {
			on:     func(e event) bool { return e.Msg == "image registered" && e.Image == bigImage },
			notYet: func(e event) bool { return e.Msg == "preseed finished" },
			what:   "right after the big image's name was registered",
		},
	}
}

func TestPowerCut(t *testing.T) {
	name := os.Getenv("KILL_POINT")
	if name == machineIDPoint {
		testMachineIDSurvives(t)
		return
	}
	kp, ok := killPoints()[name]
	if !ok {
		t.Fatalf("KILL_POINT=%q is not one of before-layer, mid-layer, mid-unpack, after-register, %s", name, machineIDPoint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Minute)
	defer cancel()
	start := time.Now()
	disk := newStateDisk(t)

	cutBoot(ctx, t, name, kp, disk)
	cut := time.Since(start)
	t.Logf("kill point %q: first boot cut %s after the test started", name, cut.Round(10*time.Millisecond))

	n := node.BootWith(ctx, t, node.Extra{State: disk})
	checkRecovered(ctx, t, name, n)
	t.Logf("kill point %q: wall time %s (first boot to the cut %s, second boot %s)",
		name, time.Since(start).Round(time.Second), cut.Round(time.Second), n.Since().Round(time.Second))
}

// newStateDisk is the path of the VM's disk, kept across boots: the first
// boot makes it from the appliance's image and adds the data partition,
// which holds containerd's state and the machine ID.
func newStateDisk(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "state.raw")
}

// cutBoot boots over the disk, kills QEMU at the kill point and logs the
// import events printed before the kill.
func cutBoot(ctx context.Context, t *testing.T, name string, kp killPoint, disk string) {
	t.Helper()
	n := node.BootWith(ctx, t, node.Extra{State: disk, Append: writeback})
	line, err := n.VM.WaitForLine(ctx, name, func(line string) bool {
		e, ok := parseEvent(line)
		return ok && kp.on(e)
	})
	if err != nil {
		t.Fatalf("kill point %q: %v", name, err)
	}
	n.VM.Kill()
	t.Logf("kill point %q (%s): SIGKILL on the event (QEMU start + %s): %s", name, kp.what, n.Since(), line)
	var printed []string
	for _, l := range n.VM.Lines() {
		e, ok := parseEvent(l)
		if !ok {
			continue
		}
		printed = append(printed, e.String())
		if kp.notYet(e) {
			t.Errorf("kill point %q: the kill landed too late: %q was printed first", name, l)
		}
	}
	t.Logf("kill point %q: preseed events before the kill:\n  %s", name, strings.Join(printed, "\n  "))
}

// checkRecovered checks the boot after the power cut: preseed done with
// nothing failed, the interrupted work of the first boot cleaned up, every
// image of the tree there, pinned and whole, nothing else registered, the
// big image's and hello's pods running, and no pull.
func checkRecovered(ctx context.Context, t *testing.T, name string, n *node.Node) {
	t.Helper()
	st := n.PreseedStatus(ctx)
	t.Logf("kill point %q: second boot: preseed done %s after QEMU start: imported %d, skipped %d, failed %d, preseed took %.3f s",
		name, n.Since(), st.Imported, st.Skipped, st.Failed, st.Duration)
	for _, b := range st.Bundles {
		t.Logf("kill point %q: second boot: bundle %s: %s %s", name, b.File, b.Result, b.Error)
	}
	if st.State != "done" || st.Failed != 0 || st.Imported+st.Skipped != bundles {
		t.Errorf("second boot: preseed %s, imported %d, skipped %d, failed %d; want done, %d imported or skipped, 0 failed",
			st.State, st.Imported, st.Skipped, st.Failed, bundles)
	}
	checkCleanup(t, name, n.VM.Lines())
	checkPoint(ctx, t, name, n, st)
	logDurations(t, name, n.VM.Lines())
	checkImages(ctx, t, n)
	n.CheckWhole(ctx, t)
	if exit, log := n.RunHello(ctx, t); exit != 0 {
		t.Errorf("hello exited with %d; log: %s", exit, log)
	}
	runBig(ctx, t, n)
	for _, l := range n.VM.Lines() {
		if strings.Contains(l, "PullImage") {
			t.Errorf("the node pulled an image: %s", l)
		}
	}
}

// checkPoint checks what the second boot must find of its kill point:
// after-register, the big bundle whole and registered, so skipped, with
// every name of it; before it, the first boot's import lease left, so
// removed, and the big bundle imported.
func checkPoint(ctx context.Context, t *testing.T, name string, n *node.Node, st *status.Status) {
	t.Helper()
	var big *status.Bundle
	for i, b := range st.Bundles {
		if strings.HasSuffix("/"+b.File, bigBundle) {
			big = &st.Bundles[i]
		}
	}
	if big == nil {
		t.Fatalf("second boot: no status of the big bundle: %+v", st.Bundles)
	}
	if name == "after-register" {
		if big.Result != status.ResultSkipped || len(big.Images) != 1 || len(big.Images[0].References) < 2 || big.Images[0].References[0] != bigImage {
			t.Fatalf("after-register: the big bundle %s, images %+v; want skipped, with its tag and digest names", big.Result, big.Images)
		}
		// Done: the CRI serves each of them now.
		for _, ref := range big.Images[0].References {
			resp, err := n.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			if err != nil || resp.GetImage() == nil {
				t.Errorf("after-register: the CRI does not serve %s (%v)", ref, err)
			}
		}
		return
	}
	if big.Result != status.ResultImported {
		t.Errorf("%s: the big bundle %s on the second boot, want imported", name, big.Result)
	}
	removed := false
	for _, l := range n.VM.Lines() {
		if e, ok := parseEvent(l); ok && e.Msg == "interrupted import lease removed" {
			removed = true
		}
	}
	if !removed {
		t.Errorf("%s: the second boot removed no interrupted import lease: the first boot's import left none", name)
	}
}

// checkCleanup logs what the second boot found left by the first and
// checks that an interrupted ingest was not complete; after the mid-layer
// cut it must have had some of the big layer.
func checkCleanup(t *testing.T, name string, lines []string) {
	t.Helper()
	discarded := 0
	for _, l := range lines {
		e, ok := parseEvent(l)
		if !ok || (e.Msg != "interrupted ingest discarded" && e.Msg != "interrupted import lease removed") {
			continue
		}
		t.Logf("kill point %q: second boot: %s", name, e)
		if e.Msg != "interrupted ingest discarded" {
			continue
		}
		// A total of 0 is unknown: the ingest's record of it did not reach
		// the disk.
		if e.Total > 0 && e.Offset >= e.Total {
			t.Errorf("interrupted ingest %s: offset %d of %d: it was complete", e.Ref, e.Offset, e.Total)
		}
		if name == "mid-layer" && !(0 < e.Offset && e.Offset < e.Total) {
			t.Errorf("interrupted ingest %s after the mid-layer cut: offset %d of %d, want part of the layer", e.Ref, e.Offset, e.Total)
		}
		discarded++
	}
	if name == "mid-layer" && discarded == 0 {
		t.Errorf("after the mid-layer cut the next boot discarded no interrupted ingest")
	}
}

// checkImages checks through the CRI that the tree's images are there and
// pinned, that no other image is registered, and that the big image has
// its full size.
func checkImages(ctx context.Context, t *testing.T, n *node.Node) {
	t.Helper()
	n.CheckPreseededImages(ctx, t, node.HelloImage, node.PauseImage, bigImage)
	tree := map[string]bool{node.HelloImage: true, node.PauseImage: true, bigImage: true}
	repos := make(map[string]bool)
	for name := range tree {
		repos[name[:strings.LastIndex(name, ":")]] = true
	}
	resp, err := n.Images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatalf("ListImages: %v", err)
	}
	for _, img := range resp.Images {
		t.Logf("CRI image %s: tags %v, digests %v, size %d, pinned %t", img.Id, img.RepoTags, img.RepoDigests, img.Size, img.Pinned)
		if len(img.RepoTags) == 0 {
			t.Errorf("image %s has no name of the tree's (digests %v)", img.Id, img.RepoDigests)
		}
		for _, tag := range img.RepoTags {
			if !tree[tag] {
				t.Errorf("image %s is named %s, not one of the tree's", img.Id, tag)
			}
		}
		for _, d := range img.RepoDigests {
			if repo, _, _ := strings.Cut(d, "@"); !repos[repo] {
				t.Errorf("image %s is named %s, not one of the tree's", img.Id, d)
			}
		}
	}
	st, err := n.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: bigImage}})
	if err != nil || st.Image == nil {
		t.Fatalf("ImageStatus %s: %v (image %v)", bigImage, err, st.GetImage())
	}
	if st.Image.Size < bigdata.Size {
		t.Errorf("image %s has size %d, less than its big file's %d", bigImage, st.Image.Size, bigdata.Size)
	}
}

// runBig runs a pod with one container of the big image, whose entrypoint
// hashes the big file, and checks the file is whole: the size and sha256
// the generator gives.
func runBig(ctx context.Context, t *testing.T, n *node.Node) {
	t.Helper()
	want, err := bigdata.SHA256(bigdata.Seed, bigdata.Size)
	if err != nil {
		t.Fatal(err)
	}
	line := fmt.Sprintf("%s: %d bytes, sha256 %s", bigdata.Path, bigdata.Size, want)
	exit, log := n.RunPod(ctx, t, "big", bigImage, line)
	t.Logf("big container log: %s", strings.TrimSpace(log))
	if exit != 0 {
		t.Errorf("big container exited with %d; want 0", exit)
	}
}

// logDurations logs how long the big layer's ingest and the big image's
// unpack took in a boot that did them, which the kill delays are sized by.
func logDurations(t *testing.T, name string, lines []string) {
	t.Helper()
	var ingest, ingested, unpack, unpacked time.Time
	for _, l := range lines {
		e, ok := parseEvent(l)
		switch {
		case !ok:
		case e.Msg == "layer ingest started" && e.isBigLayer():
			ingest = e.Ts
		case e.Msg == "layer ingested" && e.isBigLayer():
			ingested = e.Ts
		case e.Msg == "unpack started" && e.Image == bigImage:
			unpack = e.Ts
		case e.Msg == "unpack finished" && e.Image == bigImage:
			unpacked = e.Ts
		}
	}
	if !ingest.IsZero() && !ingested.IsZero() {
		t.Logf("kill point %q: second boot: big layer ingest took %s", name, ingested.Sub(ingest))
	}
	if !unpack.IsZero() && !unpacked.IsZero() {
		t.Logf("kill point %q: second boot: big image unpack took %s", name, unpacked.Sub(unpack))
	}
}

// machineIDPoint cuts the power right after init logged the machine ID it
// wrote to the new data partition: the next boot must find the same ID, or the
// node would change identity.
const machineIDPoint = "after-machine-id"

// machineID is init's "machine ID" line.
type machineID struct {
	ID         string `json:"machine_id"`
	Persistent bool   `json:"persistent"`
}

// bootMachineID boots over disk until init logs the machine ID, and
// returns it with the VM still running.
func bootMachineID(ctx context.Context, t *testing.T, disk string) (*node.Node, machineID) {
	t.Helper()
	n := node.BootWith(ctx, t, node.Extra{State: disk})
	line, err := n.VM.WaitForLine(ctx, "init's machine ID", launch.LogMessage("init", "machine ID"))
	if err != nil {
		t.Fatal(err)
	}
	var id machineID
	if err := json.Unmarshal([]byte(line), &id); err != nil || !id.Persistent || id.ID == "" {
		t.Fatalf("machine ID line %s (%v): want a persistent ID", line, err)
	}
	return n, id
}

func testMachineIDSurvives(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	disk := newStateDisk(t)
	n, first := bootMachineID(ctx, t, disk)
	n.VM.Kill()
	t.Logf("SIGKILL right after the machine ID %s was logged (QEMU start + %s)", first.ID, n.Since())
	_, second := bootMachineID(ctx, t, disk)
	if second.ID != first.ID {
		t.Errorf("after the power cut the machine ID is %s, before it was %s", second.ID, first.ID)
	}
}
