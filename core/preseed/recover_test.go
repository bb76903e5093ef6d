package preseed_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/appliance-bundler/appliance/core/preseed"
	"github.com/appliance-bundler/appliance/core/preseed/bundlefile"
	"github.com/appliance-bundler/appliance/core/preseed/status"
	"github.com/appliance-bundler/appliance/tests/containerdtest"
	"github.com/appliance-bundler/appliance/tests/preseedtest"
)

// logEvent is one logged message with its fields.
type logEvent struct {
	msg    string
	fields map[string]any
}

// recorder is a zap core that keeps every entry and calls on (if set) in
// the logging goroutine, before the code after the log call runs.
type recorder struct {
	mu     *sync.Mutex
	events *[]logEvent
	fields []zapcore.Field
	on     func(logEvent)
}

func newRecorder(on func(logEvent)) *recorder {
	return &recorder{mu: new(sync.Mutex), events: new([]logEvent), on: on}
}

func (r *recorder) logger(t *testing.T) *zap.Logger {
	return zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), r))
}

func (r *recorder) Enabled(zapcore.Level) bool { return true }
func (r *recorder) Sync() error                { return nil }
func (r *recorder) With(f []zapcore.Field) zapcore.Core {
	c := *r
	c.fields = append(append([]zapcore.Field(nil), r.fields...), f...)
	return &c
}
func (r *recorder) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(e, r)
}
func (r *recorder) Write(e zapcore.Entry, f []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, x := range append(append([]zapcore.Field(nil), r.fields...), f...) {
		x.AddTo(enc)
	}
	ev := logEvent{msg: e.Message, fields: enc.Fields}
	r.mu.Lock()
	*r.events = append(*r.events, ev)
	r.mu.Unlock()
	if r.on != nil {
		r.on(ev)
	}
	return nil
}

// named returns the events with message msg.
func (r *recorder) named(msg string) []logEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logEvent
	for _, e := range *r.events {
		if e.msg == msg {
			out = append(out, e)
		}
	}
	return out
}

// A context that ends during the metadata pass, with more bundles than
// Concurrency, leaves bundles the pass never started: Preseed must return
// the context's error, not take them for checked (it used to dereference
// their missing metadata and panic).
func TestCancelDuringMetadataPass(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, ns), 0o755); err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		img := preseedtest.Image{Name: fmt.Sprintf("preseed.test/cancel-%d:1", i), Image: image(t, uint64(2000+i), 4<<10)}
		if _, err := preseedtest.WriteBundle(filepath.Join(root, ns, fmt.Sprintf("b%02d.tar", i)), img); err != nil {
			t.Fatal(err)
		}
	}
	d := containerdtest.Start(t)
	cl := d.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var opened atomic.Int64
	cfg := preseed.Config{
		Root: root, Address: d.Address, Snapshotter: d.Snapshotter,
		StatusPath: filepath.Join(t.TempDir(), "status.json"), Concurrency: 1,
		// The first bundle opened ends the context: the pass is under way.
		Open: func(p string) (io.ReadCloser, error) {
			opened.Add(1)
			cancel()
			return bundlefile.Open(p)
		},
	}
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Preseed panicked: %v", r)
		}
	}()
	st, err := cfg.Preseed(ctx, zaptest.NewLogger(t))
	if !errors.Is(err, context.Canceled) || st != nil {
		t.Fatalf("Preseed returned %+v, %v; want the context's error", st, err)
	}
	if got := opened.Load(); got >= n {
		t.Errorf("all %d bundles were opened: the pass was not cut short", got)
	}
	if _, err := os.Stat(cfg.StatusPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("status file written by a cancelled run: %v", err)
	}
	imgs, err := cl.ImageService().List(namespaces.WithNamespace(context.Background(), ns))
	if err != nil || len(imgs) != 0 {
		t.Errorf("images after a cancelled run: %v, %v", imgs, err)
	}
}

// firstLayer is the first layer of a fixture image.
func firstLayer(t *testing.T, g goodImage) ocispec.Descriptor {
	t.Helper()
	ls, err := g.img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := ls[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	size, err := ls[0].Size()
	if err != nil {
		t.Fatal(err)
	}
	mt, _ := ls[0].MediaType()
	return ocispec.Descriptor{MediaType: string(mt), Digest: digest.Digest(d.String()), Size: size}
}

// ourLeases lists the leases labelled as preseed's in ns.
func ourLeases(t *testing.T, cl *client.Client) []leases.Lease {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	ls, err := cl.LeasesService().List(ctx, fmt.Sprintf("labels.%q", preseed.LabelLease))
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// An earlier boot's import cut by a power cut left a partial ingest of ours
// whose bytes never reached the disk (zeros) and its lease. The next run
// must abort the ingest (resuming it would fail the layer's digest), remove
// the lease, import everything, and leave others' ingests and leases alone.
func TestInterruptedIngestAndLeaseDiscarded(t *testing.T) {
	f := newFixture(t)
	ctx := namespaces.WithNamespace(context.Background(), ns)
	ls := f.cl.LeasesService()
	ours, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour),
		leases.WithLabels(map[string]string{preseed.LabelLease: "good-a.tar"}))
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	layer := firstLayer(t, f.good["preseed.test/good-a:1.0"])
	ref := "preseed-" + layer.Digest.String()
	half := layer.Size / 2
	partial := func(lease leases.Lease, ref string) {
		w, err := content.OpenWriter(leases.WithLease(ctx, lease.ID), f.cl.ContentStore(), content.WithRef(ref), content.WithDescriptor(layer))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(make([]byte, half)); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	partial(ours, ref)
	partial(theirs, "other-"+layer.Digest.String())

	rec := newRecorder(nil)
	st := f.runWith(f.config(), rec.logger(t))
	if st.Imported != 2 || st.Failed != 0 {
		t.Fatalf("status %+v", st)
	}
	f.checkGood(st)

	disc := rec.named("interrupted ingest discarded")
	if len(disc) != 1 || disc[0].fields["ref"] != ref || disc[0].fields["namespace"] != ns ||
		disc[0].fields["offset"] != half || disc[0].fields["total"] != layer.Size {
		t.Errorf("discarded ingests logged: %+v; want %s at %d of %d", disc, ref, half, layer.Size)
	}
	rm := rec.named("interrupted import lease removed")
	if len(rm) != 1 || rm[0].fields["lease"] != ours.ID || rm[0].fields["namespace"] != ns {
		t.Errorf("removed leases logged: %+v; want %s", rm, ours.ID)
	}
	if l := ourLeases(t, f.cl); len(l) != 0 {
		t.Errorf("leases of preseed left after the run: %+v", l)
	}
	sts, err := f.cl.ContentStore().ListStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 1 || sts[0].Ref != "other-"+layer.Digest.String() || sts[0].Offset != half {
		t.Errorf("ingests after the run: %+v; want only the other one, untouched", sts)
	}
	all, err := ls.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].ID != theirs.ID {
		t.Errorf("leases after the run: %+v; want only %s", all, theirs.ID)
	}
}

// chainID is the snapshot a fixture image unpacks to.
func chainID(t *testing.T, g goodImage) string {
	t.Helper()
	cf, err := g.img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var ids []digest.Digest
	for _, h := range cf.RootFS.DiffIDs {
		ids = append(ids, digest.Digest(h.String()))
	}
	return identity.ChainID(ids).String()
}

// containerd is SIGKILLed (as by a power cut, but with the page cache
// kept) when preseed logs the event; the next run on the same containerd
// root must end with every image registered, pinned and unpacked, and the
// image cut short either imported (cut before its name was registered: no
// name points at it meanwhile) or skipped (cut after).
func TestKilledDuringImport(t *testing.T) {
	for _, c := range []struct {
		event, result string
		absent        bool // the image's name must not be registered after the kill
	}{
		{"layer ingest started", status.ResultImported, true},
		{"unpack finished", status.ResultImported, true},
		{"image registered", status.ResultSkipped, false},
	} {
		t.Run(strings.ReplaceAll(c.event, " ", "_"), func(t *testing.T) {
			f := newFixture(t)
			cfg := containerdtest.NewConfig(t)
			f.d = containerdtest.StartConfig(t, cfg)
			f.cl = f.d.Client(t)
			// As the supervisor does, the run's context ends with
			// containerd: a writer waiting for a ref another holds would
			// otherwise retry until containerd is back.
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			var once sync.Once
			var cut logEvent
			rec := newRecorder(func(e logEvent) {
				if e.msg != c.event {
					return
				}
				once.Do(func() {
					cut = e
					if err := syscall.Kill(pidOf(t, cfg.ConfigPath), syscall.SIGKILL); err != nil {
						t.Errorf("failed to kill containerd: %v", err)
					}
					f.d.Stop() // waits for it to be gone
					cancel()
				})
			})
			pcfg := f.config()
			pcfg.Address = cfg.Address
			if _, err := pcfg.Preseed(ctx, rec.logger(t)); err == nil {
				t.Fatalf("preseed succeeded with containerd killed at %q", c.event)
			}
			if cut.msg == "" {
				t.Fatalf("never logged %q", c.event)
			}
			f.d = containerdtest.StartConfig(t, cfg)
			f.cl = f.d.Client(t)
			if len(ourLeases(t, f.cl)) == 0 {
				t.Errorf("no lease of the killed import left: the test did not cut an import")
			}
			// The layer event names the bundle file, the others the image.
			name, _ := cut.fields["image"].(string)
			for n, g := range f.good {
				if cut.fields["file"] == filepath.Join(f.root, ns, g.file) {
					name = n
				}
			}
			file := f.good[name].file
			if file == "" {
				t.Fatalf("event %+v names no bundle of the fixture", cut)
			}
			sctx := namespaces.WithNamespace(context.Background(), ns)
			_, err := f.cl.ImageService().Get(sctx, name)
			if c.absent && !errdefs.IsNotFound(err) {
				t.Errorf("image %s registered after a kill at %q (%v)", name, c.event, err)
			}
			if c.event == "unpack finished" {
				if _, err := f.cl.SnapshotService(cfg.Snapshotter).Stat(sctx, chainID(t, f.good[name])); err != nil {
					t.Errorf("snapshot of %s missing after a kill after its unpack: %v", name, err)
				}
			}

			rec2 := newRecorder(nil)
			st := f.runWith(pcfg, rec2.logger(t))
			if st.Failed != 0 || st.Imported+st.Skipped != 2 {
				t.Errorf("status after the kill: %+v", st)
			}
			if r := bundleStatus(t, st, file).Result; r != c.result {
				t.Errorf("bundle %s cut at %q: result %s, want %s", file, c.event, r, c.result)
			}
			f.checkGood(st)
			if c.event == "layer ingest started" && len(rec2.named("interrupted ingest discarded")) == 0 {
				t.Errorf("the killed import's ingest was not reported discarded")
			}
			if len(rec2.named("interrupted import lease removed")) == 0 {
				t.Errorf("the killed import's lease was not reported removed")
			}
			if l := ourLeases(t, f.cl); len(l) != 0 {
				t.Errorf("leases of preseed left: %+v", l)
			}
		})
	}
}

// TestProgressEvents checks the progress events (see the package doc) of an
// import: their fields, and their order within each bundle.
func TestProgressEvents(t *testing.T) {
	f := newFixture(t)
	rec := newRecorder(nil)
	st := f.runWith(f.config(), rec.logger(t))
	if st.Imported != 2 {
		t.Fatalf("status %+v", st)
	}
	want := []string{"bundle import started", "layer ingest started", "layer ingested", "unpack started", "unpack finished", "image registered", "bundle imported"}
	ingested := map[string]bool{}
	for name, g := range f.good {
		path := filepath.Join(f.root, ns, g.file)
		first := map[string]int{}
		for i, e := range *rec.events {
			if e.fields["namespace"] != ns || (e.fields["file"] != path && e.fields["image"] != name) {
				continue
			}
			if _, ok := first[e.msg]; !ok {
				first[e.msg] = i
			}
			if e.msg == "layer ingested" {
				ingested[e.fields["digest"].(string)] = true
			}
		}
		for i, w := range want {
			at, ok := first[w]
			if !ok {
				t.Errorf("bundle %s: no %q", g.file, w)
			} else if i > 0 && at < first[want[i-1]] {
				t.Errorf("bundle %s: %q before %q", g.file, w, want[i-1])
			}
		}
	}
	for _, e := range rec.named("unpack started") {
		if e.fields["snapshotter"] != f.d.Snapshotter {
			t.Errorf("unpack started: %+v", e)
		}
	}
	// One event per name: the tag, then repo@digest, each with the digest
	// its record points to.
	registered := map[string]any{}
	for _, e := range rec.named("image registered") {
		registered[e.fields["image"].(string)] = e.fields["digest"]
	}
	names := map[string]any{}
	for name, g := range f.good {
		names[name] = g.digest
		names[strings.SplitN(name, ":", 2)[0]+"@"+g.digest] = g.digest
	}
	if !maps.Equal(registered, names) || len(rec.named("image registered")) != len(names) {
		t.Errorf("image registered: %+v, want one for each of %v", rec.named("image registered"), names)
	}
	for _, e := range rec.named("layer ingest started") {
		if _, ok := e.fields["size"].(int64); !ok || !ingested[e.fields["digest"].(string)] {
			t.Errorf("layer ingest started without its layer ingested: %+v", e)
		}
	}
	for _, g := range f.good {
		ls, _ := g.img.Layers()
		for _, l := range ls {
			d, _ := l.Digest()
			if !ingested[d.String()] {
				t.Errorf("layer %s of %s never logged as ingested", d, g.file)
			}
		}
	}
}
