package main

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/core/systemimage"
	"github.com/appliance-bundler/appliance/core/updatepayload"
)

// publish copies a payload and signs it where it is published; the
// signature verifies with the public key, and a manifest the appliance
// would refuse is not signed.
func TestPublish(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pem, err := updatepayload.MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key.pem")
	os.WriteFile(keyFile, pem, 0o600)
	payload, out := filepath.Join(dir, "payload"), filepath.Join(dir, "out")
	os.Mkdir(payload, 0o755)
	h := strings.Repeat("ab", 32)
	m := updatepayload.Manifest{Format: updatepayload.Format, Version: "3", System: updatepayload.System{
		Info: systemimage.Info{RootHash: h, HashOffset: 4096, Size: 8192}, SHA256: h, Compressed: updatepayload.File{Size: 1, SHA256: h},
	}, UKI: updatepayload.File{Size: 1, SHA256: h}}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{updatepayload.ManifestFile: b, updatepayload.SystemFile: {1}, updatepayload.UKIFile: {2}} {
		os.WriteFile(filepath.Join(payload, name), data, 0o644)
	}
	if err := run(keyFile, payload, out, "", ""); err != nil {
		t.Fatal(err)
	}
	sig, err := os.ReadFile(filepath.Join(out, updatepayload.SignatureFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := updatepayload.Verify(key.Public().(ed25519.PublicKey), b, sig); err != nil {
		t.Errorf("the published signature: %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"format": 1}`), 0o644)
	if err := run(keyFile, "", "", bad, filepath.Join(dir, "bad.sig")); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("a bad manifest was signed: %v", err)
	}
	if err := run(keyFile, payload, "", "", ""); err == nil {
		t.Error("-payload without -out was taken")
	}
}
