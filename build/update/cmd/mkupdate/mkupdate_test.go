package main

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/appliance-bundler/appliance/build/appliance/uki"
	"github.com/appliance-bundler/appliance/build/verity"
	"github.com/appliance-bundler/appliance/core/systemimage"
	"github.com/appliance-bundler/appliance/core/updatepayload"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// fixture writes a system image with its hash tree and info, and a UKI
// (the pinned stub) whose command line boots rootHash with os-release osrel.
func fixture(t *testing.T, dir, osrel string, otherRoot bool) options {
	t.Helper()
	img := filepath.Join(dir, "system.img")
	data := make([]byte, 32*systemimage.BlockSize)
	rand.Read(data)
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tree, err := verity.Append(img, systemimage.BlockSize, uuid.NewSHA1(uuid.Nil, []byte("test")))
	if err != nil {
		t.Fatal(err)
	}
	info := systemimage.Info{RootHash: tree.RootHash, HashOffset: tree.HashOffset, Size: tree.Size}
	b, _ := json.Marshal(info)
	infoFile := filepath.Join(dir, "system.json")
	if err := os.WriteFile(infoFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if otherRoot {
		info.RootHash = strings.Repeat("1", 64)
	}
	stub, err := os.ReadFile(runfile.Path(t, "UKI_STUB"))
	if err != nil {
		t.Fatal(err)
	}
	efi, err := uki.Assemble(stub, []uki.Section{
		{Name: ".osrel", Data: []byte(osrel)},
		{Name: ".cmdline", Data: []byte("console=ttyS0 " + strings.Join(info.KernelArgs(), " "))},
	})
	if err != nil {
		t.Fatal(err)
	}
	ukiFile := filepath.Join(dir, "uki.efi")
	if err := os.WriteFile(ukiFile, efi, 0o644); err != nil {
		t.Fatal(err)
	}
	return options{system: img, systemInfo: infoFile, uki: ukiFile,
		manifestOut: filepath.Join(dir, "manifest.json"), systemOut: filepath.Join(dir, "system.img.zst"), ukiOut: filepath.Join(dir, "out.efi")}
}

// The manifest names the UKI's version and pins every file; the same inputs
// give the same bytes.
func TestPayload(t *testing.T) {
	o := fixture(t, t.TempDir(), "ID=appliance\nIMAGE_VERSION=\"1.2\"\n", false)
	if err := o.run(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(o.manifestOut)
	if err != nil {
		t.Fatal(err)
	}
	var m updatepayload.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil || m.Version != "1.2" {
		t.Fatalf("manifest %s: %v", b, err)
	}
	z, _ := os.ReadFile(o.systemOut)
	if int64(len(z)) != m.System.Compressed.Size {
		t.Errorf("system.img.zst is %d bytes, the manifest says %d", len(z), m.System.Compressed.Size)
	}
	again := o
	again.manifestOut, again.systemOut = o.manifestOut+".2", o.systemOut+".2"
	if err := again.run(); err != nil {
		t.Fatal(err)
	}
	b2, _ := os.ReadFile(again.manifestOut)
	z2, _ := os.ReadFile(again.systemOut)
	if string(b) != string(b2) || string(z) != string(z2) {
		t.Error("a second payload of the same inputs differs")
	}
}

// A UKI of another system, or without a version, is refused, naming it.
func TestRefuses(t *testing.T) {
	for _, c := range []struct {
		name, osrel string
		otherRoot   bool
		want        string
	}{
		{"other system", "IMAGE_VERSION=1\n", true, "boots the system with root hash"},
		{"no version", "ID=appliance\n", false, "IMAGE_VERSION"},
		{"bad version", "IMAGE_VERSION=v1\n", false, "IMAGE_VERSION"},
	} {
		o := fixture(t, t.TempDir(), c.osrel, c.otherRoot)
		if err := o.run(); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), o.uki) {
			t.Errorf("%s: %v, want an error naming %s and %q", c.name, err, o.uki, c.want)
		}
	}
}
