package updatepayload

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/core/systemimage"
)

func testManifest() Manifest {
	h := strings.Repeat("ab", 32)
	return Manifest{
		Format:  Format,
		Version: "2.1",
		System: System{
			Info:       systemimage.Info{RootHash: h, HashOffset: 8192, Size: 12288},
			SHA256:     h,
			Compressed: File{Size: 100, SHA256: h},
		},
		UKI: File{Size: 10, SHA256: h},
	}
}

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func TestSignVerify(t *testing.T) {
	key := testKey(1)
	b, err := testManifest().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sig := Sign(key, b)
	m, err := Verify(key.Public().(ed25519.PublicKey), b, sig)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "2.1" || m.System.RootHash != testManifest().System.RootHash || m.System.HashOffset != 8192 {
		t.Errorf("verified manifest %+v, want %+v", m, testManifest())
	}
	if !bytes.Equal(sig, Sign(key, b)) {
		t.Error("two signatures of the same manifest differ")
	}
}

func TestVerifyRefuses(t *testing.T) {
	key := testKey(1)
	pub := key.Public().(ed25519.PublicKey)
	b, _ := testManifest().Marshal()
	sig := Sign(key, b)
	changed := bytes.Replace(b, []byte(`"2.1"`), []byte(`"9.1"`), 1)
	unknown := bytes.Replace(b, []byte(`"format"`), []byte(`"extra": 1, "format"`), 1)
	bad := testManifest()
	bad.Version = "02"
	badBytes, _ := bad.Marshal() // refused by Marshal: write it by hand
	if badBytes != nil {
		t.Fatal("Marshal took a bad version")
	}
	badBytes = bytes.Replace(b, []byte(`"2.1"`), []byte(`"02"`), 1)
	for _, c := range []struct {
		name          string
		manifest, sig []byte
		key           ed25519.PublicKey
		want          string
	}{
		{"other key", b, sig, testKey(2).Public().(ed25519.PublicKey), "does not verify"},
		{"changed manifest", changed, sig, pub, "does not verify"},
		{"short signature", b, sig[:10], pub, "not an Ed25519 signature"},
		{"unknown field", unknown, Sign(key, unknown), pub, "unknown field"},
		{"bad version", badBytes, Sign(key, badBytes), pub, "leading zeros"},
	} {
		if _, err := Verify(c.key, c.manifest, c.sig); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one with %q", c.name, err, c.want)
		}
	}
}

func TestKeysRoundTrip(t *testing.T) {
	key := testKey(3)
	privPEM, err := MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := MarshalPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParsePrivateKey(privPEM)
	if err != nil || !priv.Equal(key) {
		t.Fatalf("private key round trip: %v", err)
	}
	pub, err := ParsePublicKey(pubPEM)
	if err != nil || !pub.Equal(key.Public()) {
		t.Fatalf("public key round trip: %v", err)
	}
	if _, err := ParsePublicKey(privPEM); err == nil {
		t.Error("a private key parsed as a public key")
	}
	if _, err := ParsePrivateKey([]byte("junk")); err == nil {
		t.Error("junk parsed as a private key")
	}
}

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1", "2", -1}, {"2", "1", 1}, {"2", "2", 0}, {"1.10", "1.9", 1}, {"1", "1.0", -1},
		{"10", "9", 1}, {"1.2.3", "1.2.3", 0}, {"2026.12.1", "2026.2.30", 1},
	} {
		got, err := CompareVersions(c.a, c.b)
		if err != nil || got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, %v, want %d", c.a, c.b, got, err, c.want)
		}
	}
	for _, v := range []string{"", "v1", "1.", ".1", "1..2", "01", "1.02", "1-rc1", "1234567890"} {
		if err := ValidVersion(v); err == nil {
			t.Errorf("ValidVersion(%q) took it", v)
		}
	}
}

func TestOSReleaseVersion(t *testing.T) {
	for osrel, want := range map[string]string{
		"ID=appliance\nIMAGE_VERSION=\"1.2\"\n": "1.2",
		"IMAGE_VERSION=3":                       "3",
		"ID=appliance\n":                        "",
		"IMAGE_VERSION=v1\n":                    "",
	} {
		got, err := OSReleaseVersion([]byte(osrel))
		if got != want || (want == "") != (err != nil) {
			t.Errorf("OSReleaseVersion(%q) = %q, %v; want %q", osrel, got, err, want)
		}
		if err != nil && !strings.Contains(err.Error(), VersionField) {
			t.Errorf("OSReleaseVersion(%q): error %v does not name %s", osrel, err, VersionField)
		}
	}
}
