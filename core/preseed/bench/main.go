// Command bench measures the preseed importer against `ctr images import`
// on the same synthetic bundles, each into a fresh containerd (the
// Bazel-built static binaries), and the time of a second run where nothing
// changed. Run it with `tools/bazel run //core/preseed/bench` as root.
//
// It is a measuring tool: it must not be a test that fails on timing, and
// it prints the numbers whether or not targets are met.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/containerd"
	"github.com/appliance-bundler/appliance/core/containerd/containerdtest"
	"github.com/appliance-bundler/appliance/core/preseed"
	"github.com/appliance-bundler/appliance/core/preseed/preseedtest"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

const ns = "k8s.io"

func main() {
	images := flag.Int("images", 20, "number of images, one bundle each")
	totalMiB := flag.Int64("mib", 1024, "total size of the bundle files in MiB")
	bases := flag.Int("bases", 4, "number of base layers shared between images")
	concurrency := flag.String("concurrency", "1,2,4", "preseed concurrency values to measure")
	keep := flag.Bool("keep", false, "keep the work directory")
	flag.Parse()
	if err := run(*images, *totalMiB<<20, *bases, *concurrency, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(n int, total int64, bases int, concurrency string, keep bool) error {
	ctrdBin, err := runfile.Lookup("CONTAINERD")
	if err != nil {
		return err
	}
	ctrBin, err := runfile.Lookup("CTR")
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("/var/tmp", "preseed-bench-")
	if err != nil {
		return err
	}
	if !keep {
		defer cleanup(work)
	}
	snapshotter := "overlayfs"
	if err := containerdtest.OverlayWorks(work); err != nil {
		fmt.Printf("overlay mount failed on %s (%v): using native\n", work, err)
		snapshotter = "native"
	}

	// Each bundle: one shared base layer plus two layers of its own.
	per := total / int64(n)
	base := per / 3
	own := (per - base) / 2
	fmt.Printf("generating %d bundles of about %d MiB (base %d MiB shared by %d/%d images, 2 own layers of %d MiB)...\n",
		n, per>>20, base>>20, n/bases, n, own>>20)
	genStart := time.Now()
	root := filepath.Join(work, "preseed")
	if err := os.MkdirAll(filepath.Join(root, ns), 0o755); err != nil {
		return err
	}
	baseLayers := make([]v1.Layer, bases)
	for i := range baseLayers {
		if baseLayers[i], err = preseedtest.RandomLayer(uint64(1+i), base); err != nil {
			return err
		}
	}
	var files []string
	var fileBytes int64
	for i := range n {
		a, err := preseedtest.RandomLayer(uint64(1000+2*i), own)
		if err != nil {
			return err
		}
		b, err := preseedtest.RandomLayer(uint64(1001+2*i), own)
		if err != nil {
			return err
		}
		img, err := preseedtest.NewImage(baseLayers[i%bases], a, b)
		if err != nil {
			return err
		}
		p := filepath.Join(root, ns, fmt.Sprintf("image-%02d.tar", i))
		size, err := preseedtest.WriteBundle(p, preseedtest.Image{Name: fmt.Sprintf("preseed.test/bench-%02d:1", i), Image: img})
		if err != nil {
			return err
		}
		files = append(files, p)
		fileBytes += size
	}
	fmt.Printf("generated %d bundles, %.1f MiB in all, in %v\n\n", n, float64(fileBytes)/(1<<20), time.Since(genStart).Round(time.Millisecond))
	mbps := func(d time.Duration) float64 { return float64(fileBytes) / (1 << 20) / d.Seconds() }

	// Baseline: ctr images import, one bundle after the other, unpacking
	// into the same snapshotter.
	d, err := start(ctrdBin, filepath.Join(work, "ctr"), snapshotter)
	if err != nil {
		return err
	}
	ctrStart := time.Now()
	for _, f := range files {
		out, err := exec.Command(ctrBin, "--address", d.cfg.Address, "--namespace", ns,
			"images", "import", "--snapshotter", snapshotter, f).CombinedOutput()
		if err != nil {
			d.stop()
			return fmt.Errorf("ctr images import %s: %w\n%s", f, err, out)
		}
	}
	ctrTime := time.Since(ctrStart)
	if err := checkCount(d.cfg.Address, n); err != nil {
		d.stop()
		return fmt.Errorf("after ctr: %w", err)
	}
	d.stop()
	fmt.Printf("ctr images import (sequential): %8.3f s  %7.1f MiB/s\n", ctrTime.Seconds(), mbps(ctrTime))

	var conc []int
	for _, c := range strings.Split(concurrency, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil {
			return fmt.Errorf("bad -concurrency %q: %w", concurrency, err)
		}
		conc = append(conc, v)
	}
	pr := preseedRun{ctrdBin: ctrdBin, work: work, root: root, snapshotter: snapshotter, n: n}
	row := func(label string, r *preseedResult) {
		fmt.Printf("%-31s %8.3f s  %7.1f MiB/s  (%.2fx ctr; %.1f MiB read)  second run %6.1f ms (%.1f KiB read)\n",
			label, r.first.Seconds(), mbps(r.first), ctrTime.Seconds()/r.first.Seconds(), float64(r.firstBytes)/(1<<20),
			float64(r.second.Microseconds())/1000, float64(r.secondBytes)/1024)
	}
	for _, c := range conc {
		r, err := pr.measure(fmt.Sprintf("preseed-%d", c), c, "")
		if err != nil {
			return err
		}
		row(fmt.Sprintf("preseed, concurrency %d:", c), r)
	}

	// The same with the build's preseed manifest enforced: every imported
	// bundle is hashed whole while it streams, and no blob the store
	// already has is seeked over.
	manifest, err := writeManifest(work, files)
	if err != nil {
		return err
	}
	r, err := pr.measure("preseed-manifest", preseed.DefaultConcurrency, manifest)
	if err != nil {
		return fmt.Errorf("with the preseed manifest: %w", err)
	}
	row(fmt.Sprintf("preseed, conc. %d, manifest:", preseed.DefaultConcurrency), r)
	fmt.Printf("\nsnapshotter %s; %d CPUs; bundle files in the page cache for every run (written just before)\n", snapshotter, numCPU())
	return nil
}

// writeManifest writes the preseed manifest of the bundle files with the
// build's own code (build/oci/bundle.WriteTree, as //images:preseed_json is
// made; the tree itself is discarded) and returns its path. The manifest's
// paths are under /containerd/preseed, so preseed finds each bundle by its
// namespace and file name.
func writeManifest(work string, files []string) (string, error) {
	inputs := make([]bundle.TreeInput, 0, len(files))
	for _, f := range files {
		inputs = append(inputs, bundle.TreeInput{
			Namespace: ns, Name: strings.TrimSuffix(filepath.Base(f), ".tar"), Compression: bundleformat.None, File: f,
		})
	}
	b, err := bundle.WriteTree(io.Discard, inputs)
	if err != nil {
		return "", fmt.Errorf("failed to make the preseed manifest: %w", err)
	}
	p := filepath.Join(work, "preseed.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return "", fmt.Errorf("failed to write the preseed manifest: %w", err)
	}
	return p, nil
}

// preseedRun is what every preseed measurement shares.
type preseedRun struct {
	ctrdBin, work, root, snapshotter string
	// n is the number of bundles, each of one image.
	n int
}

// preseedResult is one measurement: a first run into a fresh containerd
// and a second run where nothing changed.
type preseedResult struct {
	first, second           time.Duration
	firstBytes, secondBytes int64
}

// measure runs preseed twice at concurrency c, with the preseed manifest
// at manifest unless it is empty, into a fresh containerd under work/name.
func (p preseedRun) measure(name string, c int, manifest string) (*preseedResult, error) {
	d, err := start(p.ctrdBin, filepath.Join(p.work, name), p.snapshotter)
	if err != nil {
		return nil, err
	}
	defer d.stop()
	cfg := preseed.Config{
		Root: p.root, Address: d.cfg.Address, Snapshotter: p.snapshotter, Concurrency: c,
		StatusPath: filepath.Join(p.work, name+"-status.json"), Manifest: manifest,
	}
	ctx := context.Background()
	t0 := time.Now()
	st, err := cfg.Preseed(ctx, zap.NewNop())
	first := time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("first run: %w", err)
	}
	if st.Imported != p.n || st.Failed != 0 {
		return nil, fmt.Errorf("first run: %d imported, %d failed (status in %s)", st.Imported, st.Failed, cfg.StatusPath)
	}
	if err := checkCount(d.cfg.Address, p.n); err != nil {
		return nil, err
	}
	t1 := time.Now()
	st2, err := cfg.Preseed(ctx, zap.NewNop())
	second := time.Since(t1)
	if err != nil {
		return nil, fmt.Errorf("second run: %w", err)
	}
	if st2.Skipped != p.n {
		return nil, fmt.Errorf("second run: %d skipped of %d (status in %s)", st2.Skipped, p.n, cfg.StatusPath)
	}
	return &preseedResult{first: first, second: second, firstBytes: st.Bytes, secondBytes: st2.Bytes}, nil
}

func numCPU() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0
	}
	return set.Count()
}

func checkCount(address string, n int) error {
	c, err := client.New(address)
	if err != nil {
		return err
	}
	defer c.Close()
	imgs, err := c.ImageService().List(namespaces.WithNamespace(context.Background(), ns), `name~="^preseed.test/bench-"`)
	if err != nil {
		return err
	}
	if len(imgs) != n {
		return fmt.Errorf("%d bench images in containerd, want %d", len(imgs), n)
	}
	return nil
}

// daemon is one fresh containerd of the bench, started and stopped by
// containerdtest, with its output in dir/containerd.log.
type daemon struct {
	cfg containerd.Config
	d   *containerdtest.Daemon
	log *os.File
}

func start(bin, dir, snapshotter string) (*daemon, error) {
	sock, err := os.MkdirTemp("/tmp", "ctrd-bench-")
	if err != nil {
		return nil, err
	}
	cfg := containerd.Config{
		Binary: bin, Root: filepath.Join(dir, "root"), State: filepath.Join(sock, "state"),
		Address: filepath.Join(sock, "containerd.sock"), ConfigPath: filepath.Join(dir, "config.toml"),
		Snapshotter: snapshotter,
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		return nil, err
	}
	d, err := containerdtest.Launch(cfg, log)
	if err != nil {
		log.Close()
		os.RemoveAll(sock)
		return nil, fmt.Errorf("log in %s: %w", dir, err)
	}
	return &daemon{cfg: cfg, d: d, log: log}, nil
}

func (d *daemon) stop() {
	d.d.Stop()
	d.log.Close()
	os.RemoveAll(filepath.Dir(d.cfg.Address))
}

// cleanup unmounts what containerd left mounted, then removes the work
// directory.
func cleanup(dir string) {
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
				_ = unix.Unmount(f[4], unix.MNT_DETACH)
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(os.Stderr, "bench: failed to clean up:", err)
	}
}
