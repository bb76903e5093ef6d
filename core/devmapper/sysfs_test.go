package devmapper

import (
	"testing"

	"github.com/opencontainers/go-digest"
)

const hexID = "9c7a4cf9bf43d1a9d3a5c4a2a6b6e5e1f1ad5e5e5c9a54c1e49b5cd1b4d6e2f1"

func TestDiffIDOfCacheBlobPaths(t *testing.T) {
	for blob, want := range map[string]digest.Digest{
		"/containerd/erofs-cache/sha256/9c/" + hexID + ".erofs":                          digest.Digest("sha256:" + hexID),
		"/other/cache/sha256/9c/" + hexID + ".erofs":                                     digest.Digest("sha256:" + hexID),
		"/containerd/erofs-cache/sha256/ab/" + hexID + ".erofs":                          "", // wrong prefix directory
		"/containerd/erofs-cache/sha256/9c/" + hexID:                                     "", // not a blob
		"/containerd/erofs-cache/sha256/9c/9c.erofs":                                     "", // not a digest
		"/containerd/erofs-cache/md5/9c/" + hexID + ".erofs":                             "", // unknown algorithm
		"/var/lib/containerd/io.containerd.snapshotter.v1.erofs/snapshots/7/layer.erofs": "",
		"": "",
	} {
		if got := diffIDOf(blob); got != want {
			t.Errorf("diffIDOf(%q) = %q, want %q", blob, got, want)
		}
	}
}

// The kernel names the data device (the loop device) in dm-verity's
// messages: it resolves to the dm device above it and the blob below.
func TestDescribeDevFromTheLoopOrTheDMDevice(t *testing.T) {
	k := newFakeKernel(t)
	blob := "/containerd/erofs-cache/sha256/9c/" + hexID + ".erofs"
	k.loop("loop0", "7:0", blob)
	k.dm("dm-3", "253:3", "containerd-erofs-ab", "loop0")
	want := Device{
		Kernel: "dm-3", Name: "containerd-erofs-ab", Dev: "253:3",
		Loop: "loop0", LoopDev: "7:0", BackingFile: blob, DiffID: digest.Digest("sha256:" + hexID),
	}
	for _, dev := range []string{"7:0", "253:3"} {
		got, err := describeDev(k.sys, dev)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("describeDev(%s) =\n%+v\nwant\n%+v", dev, got, want)
		}
	}
	if _, err := describeDev(k.sys, "7:9"); err == nil {
		t.Error("describeDev of a device that does not exist succeeded")
	}
	// A loop device no dm device holds still names its blob.
	k.loop("loop1", "7:1", blob)
	got, err := describeDev(k.sys, "7:1")
	if err != nil || got.Kernel != "" || got.BackingFile != blob || got.Loop != "loop1" {
		t.Errorf("describeDev(7:1) = %+v, %v; want loop1 over %s", got, err, blob)
	}
}
