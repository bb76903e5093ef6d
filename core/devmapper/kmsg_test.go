package devmapper

import (
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestParseKmsg(t *testing.T) {
	r, err := parseKmsg([]byte("3,1234,56789012,-;device-mapper: verity: 7:0: data block 5 is corrupted\n SUBSYSTEM=block\n DEVICE=b7:0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Priority != 3 || r.Seq != 1234 || r.Message != "device-mapper: verity: 7:0: data block 5 is corrupted" {
		t.Fatalf("parseKmsg = %+v", r)
	}
	for _, bad := range []string{"no semicolon", "3,1;too few fields", "x,1,2,-;bad priority", "3,y,2,-;bad seq"} {
		if _, err := parseKmsg([]byte(bad)); err == nil {
			t.Errorf("parseKmsg(%q) succeeded", bad)
		}
	}
}

func TestParseCorruption(t *testing.T) {
	for msg, want := range map[string]corruption{
		"device-mapper: verity: 7:0: data block 1234 is corrupted":    {Dev: "7:0", Kind: "data", Block: 1234},
		"device-mapper: verity: 253:3: metadata block 7 is corrupted": {Dev: "253:3", Kind: "metadata", Block: 7},
	} {
		got, ok := parseCorruption(msg)
		if !ok || got != want {
			t.Errorf("parseCorruption(%q) = %+v, %v; want %+v", msg, got, ok, want)
		}
	}
	for _, msg := range []string{
		"device-mapper: verity: 7:0: reached maximum errors",
		"device-mapper: verity: sha256 using shash \"sha256-ni\"",
		"device-mapper: verity: loop0: data block 1 is corrupted",
		"device-mapper: verity: 7:0: data block x is corrupted",
		"device-mapper: verity: 7:0: data block 1 is corrupted!",
		"EXT4-fs: 7:0: data block 1 is corrupted",
	} {
		if c, ok := parseCorruption(msg); ok {
			t.Errorf("parseCorruption(%q) = %+v, want no match", msg, c)
		}
	}
}

// A corruption line becomes one error naming the layer: its diffID, blob,
// dm device and loop device, resolved from the device the kernel names.
func TestCorruptionIsLoggedWithTheLayer(t *testing.T) {
	k := newFakeKernel(t)
	blob := "/containerd/erofs-cache/sha256/9c/" + hexID + ".erofs"
	k.loop("loop0", "7:0", blob)
	k.dm("dm-3", "253:3", "containerd-erofs-ab", "loop0")
	logger, logs := observed()
	v := VerityLog{Sys: k.sys}
	v.handle(logger, []byte("6,10,100,-;loop0: detected capacity change from 0 to 9000\n"), -1)
	v.handle(logger, []byte("3,11,200,-;device-mapper: verity: 7:0: data block 1234 is corrupted\n"), -1)
	v.handle(logger, []byte("3,12,300,-;device-mapper: verity: 7:9: data block 1 is corrupted\n"), -1)

	errs := logs.FilterMessage("dm-verity: corrupted block in a layer blob").All()
	if len(errs) != 1 || logs.Len() != 2 {
		t.Fatalf("logged %v, want one corruption line and one for the unknown device", logs.All())
	}
	f := fieldsOf(errs[0])
	if f["diff_id"] != "sha256:"+hexID || f["backing_file"] != blob || f["name"] != "containerd-erofs-ab" ||
		f["dev"] != "253:3" || f["reported_dev"] != "7:0" || f["block_type"] != "data" {
		t.Errorf("corruption fields = %v", f)
	}
	if errs[0].ContextMap()["block"] != uint64(1234) {
		t.Errorf("block = %v, want 1234", errs[0].ContextMap()["block"])
	}
	unknown := logs.FilterMessage("dm-verity: corrupted block on a device whose layer is unknown").All()
	if len(unknown) != 1 || fieldsOf(unknown[0])["reported_dev"] != "7:9" || !strings.Contains(fieldsOf(unknown[0])["error"], "7:9") {
		t.Errorf("unknown device line = %v", unknown)
	}
}

// A device gone from sysfs before its line is read is named from what
// Links recorded when it linked it.
func TestCorruptionOfAGoneDeviceUsesTheRegistry(t *testing.T) {
	k := newFakeKernel(t)
	blob := "/containerd/erofs-cache/sha256/9c/" + hexID + ".erofs"
	k.loop("loop5", "7:5", blob)
	k.dm("dm-5", "253:5", "containerd-erofs-gone", "loop5")
	reg := NewRegistry()
	l := newLinker(k.sys, k.dev, zap.NewNop(), reg)
	if err := l.update("dm-5"); err != nil {
		t.Fatal(err)
	}
	k.removeDevice("dm-5", "253:5")
	k.removeDevice("loop5", "7:5")
	logger, logs := observed()
	VerityLog{Sys: k.sys, Registry: reg}.handle(logger, []byte("3,11,200,-;device-mapper: verity: 7:5: data block 9 is corrupted\n"), -1)
	errs := logs.FilterMessage("dm-verity: corrupted block in a layer blob").All()
	if len(errs) != 1 {
		t.Fatalf("logged %v, want the layer named from the registry", logs.All())
	}
	if f := fieldsOf(errs[0]); f["diff_id"] != "sha256:"+hexID || f["name"] != "containerd-erofs-gone" || f["resolved_from"] != "registry" {
		t.Errorf("fields = %v", f)
	}
}
