package appliance_test

import (
	"bytes"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/go-dmverity/pkg/verity"
	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	erofs "github.com/erofs/go-erofs"

	"github.com/appliance-bundler/appliance/build/appliance/uki"
	"github.com/appliance-bundler/appliance/core/disklayout"
	"github.com/appliance-bundler/appliance/core/systemimage"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// The production disk, read as the firmware and init read it: the UKI on
// the ESP (systemd-boot's committed entry) carries the system's root hash and hash offset on its command
// line; the partition named by that root hash is slot A; its contents
// verify against the root hash (go-dmverity, as the kernel will); and the
// EROFS in it holds the production root, /init being the very init binary.
func TestDiskHoldsItsVerifiedSystem(t *testing.T) {
	d, err := diskfs.Open(runfile.Path(t, "DISK"), diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	esp, err := d.GetFilesystem(1)
	if err != nil {
		t.Fatal(err)
	}
	// systemd-boot boots the one committed entry: release VERSION's UKI.
	entry := disklayout.EntryDir + "/" + disklayout.Entry{Version: os.Getenv("VERSION")}.Name()
	f, err := esp.OpenFile(entry, os.O_RDONLY)
	if err != nil {
		t.Fatalf("the UKI's boot entry %s: %v", entry, err)
	}
	efi, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	info := systemFromUKI(t, efi)

	table, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := systemimage.PartitionGUID(info.RootHash)
	var slot *gpt.Partition
	for _, p := range table.(*gpt.Table).Partitions {
		if strings.EqualFold(p.GUID, want) {
			slot = p
		}
	}
	if slot == nil || slot.Name != disklayout.SystemA {
		t.Fatalf("no partition %s with GUID %s (the root hash's first half): %+v", disklayout.SystemA, want, slot)
	}
	img := filepath.Join(t.TempDir(), "system-a.img")
	part := io.NewSectionReader(d.Backend, int64(slot.Start)*disklayout.SectorSize, int64(slot.Size))
	out, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, part); err != nil {
		t.Fatal(err)
	}
	out.Close()
	root, _ := hex.DecodeString(info.RootHash)
	p := verity.DefaultParams()
	p.HashAreaOffset = info.HashOffset
	if err := verity.Verify(&p, img, img, root); err != nil {
		t.Fatalf("slot A does not verify against the UKI's root hash %s: %v", info.RootHash, err)
	}

	sys, err := erofs.Open(io.NewSectionReader(part, 0, int64(info.HashOffset)))
	if err != nil {
		t.Fatalf("slot A holds no EROFS: %v", err)
	}
	initBin, err := os.ReadFile(runfile.Path(t, "INIT"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := fs.ReadFile(sys, "init"); err != nil || !bytes.Equal(got, initBin) {
		t.Errorf("/init of the system is not //core/init (%d bytes, %v)", len(got), err)
	}
	for _, p := range []string{"usr/bin/containerd", "usr/bin/kubelet", "usr/bin/mkfs.erofs", "etc/kubernetes/manifests", "containerd/preseed"} {
		if _, err := fs.Stat(sys, p); err != nil {
			t.Errorf("the system lacks /%s: %v", p, err)
		}
	}
}

// systemFromUKI reads the system's info from the UKI's command line.
func systemFromUKI(t *testing.T, efi []byte) systemimage.Info {
	t.Helper()
	info, _, err := uki.System(efi)
	if err != nil {
		t.Fatalf("the UKI: %v", err)
	}
	return info
}
