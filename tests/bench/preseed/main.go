// Command bench measures how the appliance's images get into containerd at
// first boot, on one set of synthetic bundles (shared base layers), each
// path into a fresh containerd (the Bazel-built static binaries):
//
//   - `ctr images import` of the whole bundles (overlayfs);
//   - preseed of the whole bundles into overlayfs, in the appliance's
//     configuration before the layer cache (manifest enforced, concurrency
//     preseed.DefaultConcurrency);
//   - zero-copy preseed: the slim bundles and EROFS layer content cache of
//     the preseed tree, made before the timed part as the build makes them
//     (build/oci/bundle.WriteTreeCached with build/oci/erofs.CacheBundle),
//     into the erofs snapshotter with layer_content_caches.
//
// and, with -tmpfs, both preseed paths again with containerd's root on a
// tmpfs. For each it prints the time, the bytes read and the bytes stored,
// next to the sum of the distinct uncompressed layers, and for the preseed
// paths a reboot: containerd restarted on the same root, preseed run again
// with nothing changed. Run it as root with `tools/bazel run
// //tests/bench/preseed`: the cache needs mkfs.erofs of the toolchain root.
//
// It is a measuring tool: it must not be a test that fails on timing, and
// it prints the numbers and the targets whether or not they are met. It
// fails only when an import does not give the images it should (for
// zero-copy: every layer snapshot served from the cache).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/appliance-bundler/appliance/core/preseed"
)

// ns is the containerd namespace of every bench image (the CRI's).
const ns = "k8s.io"

// options are the command line's.
type options struct {
	images, bases int
	total         int64
	// concurrency are extra overlayfs preseed rows, one per value.
	concurrency []int
	keep        bool
	// tmpfs adds the preseed paths with containerd's root on a tmpfs.
	tmpfs bool
}

func main() {
	images := flag.Int("images", 20, "number of images, one bundle each")
	totalMiB := flag.Int64("mib", 1024, "total size of the whole bundle files in MiB")
	bases := flag.Int("bases", 4, "number of base layers shared between images")
	concurrency := flag.String("concurrency", "", "extra rows: overlayfs preseed at these concurrencies (e.g. 1,2)")
	tmpfs := flag.Bool("tmpfs", true, "also measure both preseed paths with containerd's root on a tmpfs (the appliance without a state disk)")
	keep := flag.Bool("keep", false, "keep the work directory")
	flag.Parse()
	o := options{images: *images, bases: *bases, total: *totalMiB << 20, keep: *keep, tmpfs: *tmpfs}
	var err error
	if o.concurrency, err = parseInts(*concurrency); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("bad -concurrency %q: %q is not a positive number", s, f)
		}
		out = append(out, v)
	}
	return out, nil
}

func run(ctx context.Context, o options) error {
	if o.images < 1 || o.bases < 1 || o.total < 1<<20 {
		return errors.New("-images and -bases must be positive and -mib at least 1")
	}
	env, err := setUp(o.keep)
	if err != nil {
		return err
	}
	defer env.close()
	set, err := generate(env.work, o)
	if err != nil {
		return err
	}
	zc, err := makeZeroCopy(ctx, env.work, set)
	if err != nil {
		return err
	}
	fmt.Println()

	rows, err := env.measureAll(ctx, set, zc, o)
	if err != nil {
		return err
	}
	printTable(os.Stdout, set, rows)
	printNotes(os.Stdout, env, set, zc)
	return nil
}

// measureAll measures every path, in the order of the table.
func (e *env) measureAll(ctx context.Context, set *bundleSet, zc *zeroCopy, o options) ([]row, error) {
	r, err := e.measureCtr(ctx, set)
	if err != nil {
		return nil, err
	}
	rows := []row{r}
	overlay := preseedPath{
		label: "preseed overlayfs", root: set.root, bytes: set.bytes, manifest: set.manifest,
		daemon: e.overlay, concurrency: preseed.DefaultConcurrency,
	}
	paths := []preseedPath{overlay, zc.path(e)}
	if o.tmpfs {
		for _, p := range paths[:2] {
			p.label, p.tmpfs = p.label+" (tmpfs)", true
			paths = append(paths, p)
		}
	}
	for _, c := range o.concurrency {
		p := overlay
		p.label, p.concurrency = fmt.Sprintf("preseed overlayfs, conc. %d", c), c
		paths = append(paths, p)
	}
	for _, p := range paths {
		r, err := e.measurePreseed(ctx, set, p)
		if err != nil {
			return nil, err
		}
		if p.check != nil {
			r.note = fmt.Sprintf("%s; containerd read %s in all, the cache holds %s",
				zc.note, size(r.read.daemon), size(r.stored.cache))
		}
		rows = append(rows, r)
	}
	return rows, nil
}
