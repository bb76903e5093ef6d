package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/preseed"
)

// Targets of issue 13, printed next to the numbers, never enforced.
const (
	targetFirstBoot = 100 * time.Millisecond
	// targetStored is the bound of stored bytes over the sum of the
	// distinct uncompressed layers.
	targetStored = 1.1
)

func printTable(w io.Writer, set *bundleSet, rows []row) {
	fmt.Fprintf(w, "\n%d images, %d distinct layers, %s of distinct uncompressed layers\n\n",
		set.n(), set.layers, mib(set.layerBytes))
	width := 0
	for _, r := range rows {
		width = max(width, len(r.label))
	}
	// Right-aligned numbers; the labels padded to stay left-aligned.
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tbundle files\tfirst boot\tbundle read\timporter rchar\tcontainerd rchar\t"+
		"content\tsnapshots\tcache\tstored\tstored/layers\treboot\treboot bundle read\t\n", width, "path")
	for _, r := range rows {
		reboot, rebootRead := "-", "-"
		if r.reboot != 0 {
			reboot, rebootRead = dur(r.reboot), size(r.rebootRead.bundle)
		}
		fmt.Fprintf(tw, "%-*s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.3f\t%s\t%s\t\n",
			width, r.label, size(r.bundles), dur(r.first), size(r.read.bundle), size(r.read.importer), size(r.read.daemon),
			size(r.stored.content), size(r.stored.snapshots), size(r.stored.cache), size(r.stored.total()),
			r.ratio(set), reboot, rebootRead)
	}
	tw.Flush()

	limit := int64(targetStored * float64(set.layerBytes))
	fmt.Fprintf(w, "\ntargets (printed, not enforced): first-boot import <= %s; stored <= %.1f x distinct uncompressed layers = %s\n",
		dur(targetFirstBoot), targetStored, mib(limit))
	for _, r := range rows {
		fmt.Fprintf(w, "  %-*s  first boot %10s %-7s  stored %.3f x %s\n", width, r.label,
			dur(r.first), met(r.first <= targetFirstBoot), r.ratio(set), met(r.stored.total() <= limit))
	}
	for _, r := range rows {
		if r.note != "" {
			fmt.Fprintf(w, "  %s: %s\n", r.label, r.note)
		}
	}
}

// ratio is the row's stored bytes over the distinct uncompressed layers.
func (r row) ratio(set *bundleSet) float64 {
	return float64(r.stored.total()) / float64(set.layerBytes)
}

func printNotes(w io.Writer, e *env, set *bundleSet, z *zeroCopy) {
	fmt.Fprintf(w, `
how it was measured:
  first boot: preseed (or every ctr import) into a fresh containerd; reboot: containerd restarted on
    the same root, preseed run again with nothing changed. Preseed: the appliance's configuration
    (preseed manifest enforced; %d bundles at once with layers to ingest, %d with all layers
    cached). containerd's root is on the disk of the work directory (the appliance with a state
    disk), or on a tmpfs for "(tmpfs)" rows (the appliance without one; there a real reboot
    starts empty, so their reboot is a containerd restart).
  bundle read: bytes read from the bundle files, counted through the readers the bench controls
    (preseed's Config.Open; the pipe into "ctr images import -").
  importer / containerd rchar: rchar deltas of /proc/<pid>/io over the import (bytes through read
    syscalls, page cache hits and sockets included). Importer: the bench process running preseed
    (bundles, dm-verity sidecars, API replies) or the ctr processes; containerd: the daemon (the
    blobs it is sent, the content store it unpacks from, and any cache blob it would read).
  stored: allocated bytes (st_blocks x 512; each inode once; symlinks not followed) of containerd's
    content store + snapshotter directory + the layer cache; containerd's metadata DB is not counted.
    bundle files: apparent size of the bundles each path reads (not in stored).
  snapshotters: %s for the ctr and overlayfs rows; erofs with layer_content_caches = [the cache]
    for zero-copy.
  dm-verity: dmverity_mode %q: %s.
    An import from the cache never mounts a layer, so dm-verity is not exercised by this bench.
  zero-copy input: %d cache entries and %d slim bundles (%s), made in %v before the timed part
    as the build makes them (build/oci/bundle.WriteTreeCached, build/oci/erofs.TreeCache, mkfs.erofs).
  %d CPUs; every bundle file is in the page cache (written just before).
`, preseed.DefaultConcurrency, preseed.DefaultSlimConcurrency, e.overlay.Snapshotter, e.erofs.DmverityMode, e.dmverityWhy,
		z.entries, set.n(), size(z.bytes), z.build.Round(time.Millisecond), numCPU())
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

func dur(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.3f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}

// size spells n bytes in the largest unit that keeps it at least 1.
func size(n int64) string {
	switch {
	case n >= 1<<20 || n <= -1<<20:
		return mib(n)
	case n >= 1<<10 || n <= -1<<10:
		return kib(n)
	}
	return fmt.Sprintf("%d B", n)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
func kib(n int64) string { return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10)) }

func numCPU() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0
	}
	return set.Count()
}
