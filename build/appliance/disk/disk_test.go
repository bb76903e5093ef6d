package disk_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/appliance-bundler/appliance/build/appliance/disk"
	"github.com/appliance-bundler/appliance/core/disklayout"
)

// pattern is n bytes that differ from block to block, so that a misplaced
// copy shows.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/512) ^ seed
	}
	return b
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// rootHash is a system's root hash; slot A's GUID is its first half.
const (
	rootHash  = "0123456789abcdef0123456789abcdeffedcba9876543210fedcba9876543210"
	slotAGUID = "01234567-89ab-cdef-0123-456789abcdef"
)

// The image holds the layout it reports: the GPT's disk GUID and
// partitions (slot A named by the system's root hash), systemd-boot at the
// boot path of the ESP with its configuration and the UKI as the version's
// committed entry, the system in slot A, slot B empty; the same inputs give
// the same bytes.
func TestWrite(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "315532800")
	uki, system, loader := pattern(3<<20+7, 0x5a), pattern(1<<20+512, 0xa5), pattern(100<<10, 0x3c)
	spec := disk.Spec{
		UKI: writeFile(t, "uki.efi", uki), System: writeFile(t, "system.img", system),
		Loader: writeFile(t, "systemd-bootx64.efi", loader), Version: "1.2",
		SystemRootHash: rootHash, SystemSize: 4 << 20, Seed: rootHash,
	}
	out := filepath.Join(t.TempDir(), "disk.raw")
	layout, err := disk.Write(spec, out)
	if err != nil {
		t.Fatal(err)
	}
	again := filepath.Join(t.TempDir(), "disk.raw")
	if _, err := disk.Write(spec, again); err != nil {
		t.Fatal(err)
	}
	a, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(again); err != nil || !bytes.Equal(a, b) {
		t.Fatalf("a second image from the same inputs differs (%v)", err)
	}
	if int64(len(a)) != layout.Size {
		t.Errorf("image is %d bytes, its layout says %d", len(a), layout.Size)
	}

	d, err := diskfs.Open(out, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	table := pt.(*gpt.Table)
	if !strings.EqualFold(table.GUID, layout.DiskGUID) || layout.DiskGUID != disklayout.GUID(rootHash, "disk") {
		t.Errorf("disk GUID %s, layout %s", table.GUID, layout.DiskGUID)
	}
	names := []string{disklayout.ESP, disklayout.SystemA, disklayout.SystemB}
	if len(table.Partitions) != len(names) || len(layout.Partitions) != len(names) {
		t.Fatalf("%d partitions, layout %d, want %d", len(table.Partitions), len(layout.Partitions), len(names))
	}
	for i, p := range table.Partitions {
		l := layout.Partitions[i]
		if p.Name != names[i] || l.Name != names[i] || !strings.EqualFold(string(p.Type), l.Type) || !strings.EqualFold(p.GUID, l.GUID) ||
			int64(p.Start)*disklayout.SectorSize != l.Offset || int64(p.Size) != l.Size || l.Offset%disklayout.Alignment != 0 {
			t.Errorf("partition %d: %s %s %s at sector %d, %d bytes; layout %+v", i+1, p.Name, p.Type, p.GUID, p.Start, p.Size, l)
		}
	}

	if layout.Partitions[1].GUID != slotAGUID {
		t.Errorf("slot A's GUID is %s, want %s (the root hash's first half)", layout.Partitions[1].GUID, slotAGUID)
	}

	fs, err := d.GetFilesystem(1)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{
		disklayout.LoaderPath:                      loader,
		disklayout.LoaderConfPath:                  []byte(disklayout.LoaderConf),
		disklayout.EntryDir + "/appliance-1.2.efi": uki,
	} {
		f, err := fs.OpenFile(name, os.O_RDONLY)
		if err != nil {
			t.Fatalf("%s on the ESP: %v", name, err)
		}
		if got, err := io.ReadAll(f); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s on the ESP: %d bytes (%v), want %d", name, len(got), err, len(want))
		}
	}
	slotA, slotB := layout.Partitions[1], layout.Partitions[2]
	if got := a[slotA.Offset : slotA.Offset+int64(len(system))]; !bytes.Equal(got, system) {
		t.Error("slot A does not hold the system image")
	}
	if !bytes.Equal(a[slotA.Offset+int64(len(system)):slotB.Offset+slotB.Size], make([]byte, slotB.Offset+slotB.Size-slotA.Offset-int64(len(system)))) {
		t.Error("the rest of slot A and slot B are not empty")
	}
}

// What cannot make a reproducible, fitting image is refused, naming why.
func TestWriteRefuses(t *testing.T) {
	uki := writeFile(t, "uki.efi", pattern(4096, 1))
	big := writeFile(t, "system.img", pattern(2<<20, 2))
	out := func() string { return filepath.Join(t.TempDir(), "disk.raw") }

	t.Setenv("SOURCE_DATE_EPOCH", "")
	if _, err := disk.Write(disk.Spec{UKI: uki, Loader: uki, Version: "1", SystemSize: 1 << 20, Seed: "s"}, out()); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH is not set") {
		t.Errorf("no SOURCE_DATE_EPOCH: %v", err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "315532800")
	for name, tc := range map[string]struct {
		spec disk.Spec
		want string
	}{
		"no seed":        {disk.Spec{UKI: uki, Loader: uki, Version: "1", SystemSize: 1 << 20}, "no seed"},
		"system too big": {disk.Spec{UKI: uki, Loader: uki, Version: "1", System: big, SystemSize: 1 << 20, Seed: "s"}, "the system image " + big + " is 2097152 bytes, more than its slot's 1048576"},
		"unaligned slot": {disk.Spec{UKI: uki, Loader: uki, Version: "1", SystemSize: 1<<20 + 512, Seed: "s"}, "must be a positive multiple of 1 MiB"},
		"small ESP":      {disk.Spec{UKI: uki, Loader: uki, Version: "1", SystemSize: 1 << 20, ESPSize: 32 << 20, Seed: "s"}, "ESP size 33554432"},
		"no UKI":         {disk.Spec{UKI: uki + ".missing", Loader: uki, Version: "1", SystemSize: 1 << 20, Seed: "s"}, "the UKI: "},
	} {
		if _, err := disk.Write(tc.spec, out()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v; want %q", name, err, tc.want)
		}
	}
}
