package devmapper

import (
	"os"
	"path/filepath"
	"testing"
)

// linkTo is where the link mapper/name points, or "" when there is none.
func linkTo(t *testing.T, k *fakeKernel, name string) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join(k.dev, "mapper", name))
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return target
}

func dmEvent(action, kernel string) Uevent {
	ev, err := ParseUevent(uevent(action+"@/devices/virtual/block/"+kernel,
		"ACTION="+action, "DEVPATH=/devices/virtual/block/"+kernel, "SUBSYSTEM=block", "DEVNAME="+kernel, "DEVTYPE=disk"))
	if err != nil {
		panic(err)
	}
	return ev
}

// At start every dm device gets its link, which resolves to its /dev node,
// and one log line names the layer; stale links of devices gone are removed.
func TestSyncLinksExistingDevicesAndPrunesStaleLinks(t *testing.T) {
	k := newFakeKernel(t)
	blob := "/containerd/erofs-cache/sha256/9c/" + hexID + ".erofs"
	k.loop("loop0", "7:0", blob)
	k.dm("dm-0", "253:0", "containerd-erofs-aa", "loop0")
	k.dm("dm-1", "253:1", "plain", "")
	k.symlink("../dm-7", filepath.Join(k.dev, "mapper", "gone"))
	k.symlink("../dm-1", filepath.Join(k.dev, "mapper", "old-name-of-dm-1"))
	logger, logs := observed()
	l := newLinker(k.sys, k.dev, logger, nil)
	l.sync()

	if got := linkTo(t, k, "containerd-erofs-aa"); got != "../dm-0" {
		t.Errorf("link containerd-erofs-aa -> %q, want ../dm-0", got)
	}
	if _, err := os.Stat(filepath.Join(k.dev, "mapper", "containerd-erofs-aa")); err != nil {
		t.Errorf("the link does not resolve to the device node: %v", err)
	}
	if got := linkTo(t, k, "plain"); got != "../dm-1" {
		t.Errorf("link plain -> %q, want ../dm-1", got)
	}
	for _, stale := range []string{"gone", "old-name-of-dm-1"} {
		if got := linkTo(t, k, stale); got != "" {
			t.Errorf("stale link %s -> %q was kept", stale, got)
		}
	}
	if _, err := os.Stat(filepath.Join(k.dev, "mapper", "control")); err != nil {
		t.Errorf("control was touched: %v", err)
	}
	linked := logs.FilterMessage("device-mapper device linked").All()
	if len(linked) != 2 {
		t.Fatalf("%d 'device-mapper device linked' lines, want 2: %v", len(linked), logs.All())
	}
	f := fieldsOf(linked[0])
	if f["name"] != "containerd-erofs-aa" || f["dev"] != "253:0" || f["loop_dev"] != "7:0" || f["backing_file"] != blob ||
		f["diff_id"] != "sha256:"+hexID || f["link"] != filepath.Join(k.dev, "mapper", "containerd-erofs-aa") {
		t.Errorf("linked line fields = %v", f)
	}
	l.sync()
	if n := logs.FilterMessage("device-mapper device linked").Len(); n != 2 {
		t.Errorf("a second scan logged the devices again: %d lines", n)
	}
}

// The life of a device as uevents tell it: "add" before its dm/ directory
// exists links nothing, the "change" of its resume links it, "remove"
// unlinks it.
func TestUeventsLinkAndUnlink(t *testing.T) {
	k := newFakeKernel(t)
	logger, logs := observed()
	l := newLinker(k.sys, k.dev, logger, nil)

	k.device("dm-2", "253:2") // add_disk has run, dm/name is not there yet
	l.handle(dmEvent("add", "dm-2"))
	if logs.Len() != 0 {
		t.Errorf("'add' before dm/name logged: %v", logs.All())
	}
	k.loop("loop3", "7:3", "/x/layer.erofs")
	k.write(filepath.Join(k.sys, "block", "dm-2", "dm", "name"), "containerd-erofs-bb\n")
	k.symlink("../../loop3", filepath.Join(k.sys, "block", "dm-2", "slaves", "loop3"))
	l.handle(dmEvent("change", "dm-2"))
	if got := linkTo(t, k, "containerd-erofs-bb"); got != "../dm-2" {
		t.Fatalf("after change: link -> %q, want ../dm-2", got)
	}
	if f := fieldsOf(logs.FilterMessage("device-mapper device linked").All()[0]); f["loop"] != "loop3" || f["diff_id"] != "" {
		t.Errorf("linked fields = %v, want loop3 and no diff_id (not a cache blob)", f)
	}

	// A rename moves the link.
	k.write(filepath.Join(k.sys, "block", "dm-2", "dm", "name"), "renamed\n")
	l.handle(dmEvent("change", "dm-2"))
	if linkTo(t, k, "containerd-erofs-bb") != "" || linkTo(t, k, "renamed") != "../dm-2" {
		t.Errorf("rename: old -> %q, new -> %q", linkTo(t, k, "containerd-erofs-bb"), linkTo(t, k, "renamed"))
	}

	k.removeDevice("dm-2", "253:2")
	l.handle(dmEvent("remove", "dm-2"))
	if got := linkTo(t, k, "renamed"); got != "" {
		t.Errorf("after remove: link -> %q, want none", got)
	}
	if logs.FilterMessage("device-mapper device removed").Len() != 1 {
		t.Errorf("no 'device-mapper device removed' line: %v", logs.All())
	}
}

// A name that would escape /dev/mapper or replace its control node is
// refused with an error naming the device.
func TestBadNamesAreNotLinked(t *testing.T) {
	k := newFakeKernel(t)
	k.dm("dm-4", "253:4", "control", "")
	l := newLinker(k.sys, k.dev, nil, nil)
	if err := l.update("dm-4"); err == nil {
		t.Fatal("a dm device named control was linked")
	}
	if fi, err := os.Lstat(filepath.Join(k.dev, "mapper", "control")); err != nil || fi.Mode()&os.ModeSymlink != 0 {
		t.Fatalf("control was replaced: %v %v", fi, err)
	}
}
