// Package updatepayload is the contract of an update payload between the
// release pipeline (build/update's mkupdate and signupdate write it) and the
// appliance's updater (core/updater reads it): its file names, the
// manifest's schema, its signature, and how versions compare.
//
// A payload is a directory of four files, served as they are over
// http(s) or copied to a disk:
//
//   - ManifestFile: the manifest (JSON): the version, the system image's
//     root hash, sizes and sha256s of every file;
//   - SignatureFile: the Ed25519 signature (RFC 8032, pure Ed25519) of the
//     manifest's exact bytes, 64 raw bytes;
//   - SystemFile: the system image (core/systemimage), zstd-compressed;
//   - UKIFile: the Unified Kernel Image that boots it.
//
// Why this format: the signature is a standard one over the manifest as it
// is, and the keys are standard PEM files (PKCS #8 and PKIX, RFC 8410), so
// `openssl genpkey -algorithm ed25519` makes a key and `openssl pkeyutl
// -verify -rawin` checks a payload without this project's tools. Nothing
// but the manifest is signed: it pins every other file by sha256, and the
// updater reads the manifest first, so no byte of a file is used before the
// signature over its hash is checked.
//
// It holds values and pure functions only: it must not read files or the
// network.
package updatepayload

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/appliance-bundler/appliance/core/systemimage"
)

// The payload's files.
const (
	ManifestFile  = "manifest.json"
	SignatureFile = "manifest.json.sig"
	SystemFile    = "system.img.zst"
	UKIFile       = "uki.efi"
)

// Format is the manifest's format version; a manifest of another format is
// refused.
const Format = 1

// MaxManifestSize bounds what a reader takes as a manifest.
const MaxManifestSize = 64 << 10

// Manifest describes a payload.
type Manifest struct {
	Format int `json:"format"`
	// Version is the release's version (ValidVersion).
	Version string `json:"version"`
	// System is the system image.
	System System `json:"system"`
	// UKI is UKIFile.
	UKI File `json:"uki"`
}

// System is the system image: its verity info (root hash, hash offset and
// size of the image), the sha256 of the image, and SystemFile as served.
type System struct {
	systemimage.Info
	SHA256     string `json:"sha256"`
	Compressed File   `json:"compressed"`
}

// File is a file's size in bytes and its sha256 (hex).
type File struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Validate tells whether m could describe a payload.
func (m Manifest) Validate() error {
	if m.Format != Format {
		return fmt.Errorf("format %d, want %d", m.Format, Format)
	}
	if err := ValidVersion(m.Version); err != nil {
		return err
	}
	if err := m.System.Info.Validate(); err != nil {
		return fmt.Errorf("system: %w", err)
	}
	for _, f := range []struct {
		name string
		file File
	}{
		{"system", File{m.System.Size, m.System.SHA256}},
		{"system.compressed", m.System.Compressed},
		{"uki", m.UKI},
	} {
		if b, err := hex.DecodeString(f.file.SHA256); err != nil || len(b) != 32 {
			return fmt.Errorf("%s: sha256 %q is not 64 hex digits", f.name, f.file.SHA256)
		}
		if f.file.Size <= 0 {
			return fmt.Errorf("%s: size %d is not positive", f.name, f.file.Size)
		}
	}
	return nil
}

// Marshal is the manifest's bytes as mkupdate writes them: indented JSON
// ending in a newline.
func (m Manifest) Marshal() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Sign is the signature of manifest (SignatureFile's content). Ed25519 is
// deterministic: the same key and manifest give the same bytes.
func Sign(key ed25519.PrivateKey, manifest []byte) []byte {
	return ed25519.Sign(key, manifest)
}

// Verify checks sig over manifest with key, then parses and validates the
// manifest. Nothing of the manifest is read before the signature holds.
func Verify(key ed25519.PublicKey, manifest, sig []byte) (Manifest, error) {
	var m Manifest
	if len(sig) != ed25519.SignatureSize {
		return m, fmt.Errorf("%s is %d bytes, not an Ed25519 signature (%d bytes)", SignatureFile, len(sig), ed25519.SignatureSize)
	}
	if !ed25519.Verify(key, manifest, sig) {
		return m, fmt.Errorf("%s does not verify %s with the appliance's update key: not signed by it, or changed since", SignatureFile, ManifestFile)
	}
	dec := json.NewDecoder(bytes.NewReader(manifest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("%s: %w", ManifestFile, err)
	}
	if err := m.Validate(); err != nil {
		return m, fmt.Errorf("%s: %w", ManifestFile, err)
	}
	return m, nil
}

// ParsePublicKey reads an Ed25519 public key from PEM ("PUBLIC KEY",
// PKIX), as `openssl pkey -pubout` writes it.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("not a PEM \"PUBLIC KEY\" block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an Ed25519 key", k)
	}
	return pub, nil
}

// ParsePrivateKey reads an Ed25519 private key from PEM ("PRIVATE KEY",
// PKCS #8), as `openssl genpkey -algorithm ed25519` writes it.
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM \"PRIVATE KEY\" block (PKCS #8)")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an Ed25519 key", k)
	}
	return priv, nil
}

// MarshalPublicKey is key as PEM ("PUBLIC KEY", PKIX).
func MarshalPublicKey(key ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// MarshalPrivateKey is key as PEM ("PRIVATE KEY", PKCS #8).
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ValidVersion tells whether v is a version: dot-separated decimal numbers
// without leading zeros ("3", "1.12.0"), each at most 9 digits. This is
// the subset on which CompareVersions and systemd-boot's version order
// (which picks the newest boot entry) agree.
func ValidVersion(v string) error {
	if v == "" {
		return errors.New("empty version")
	}
	for _, c := range strings.Split(v, ".") {
		if c == "" || len(c) > 9 || strings.Trim(c, "0123456789") != "" || (len(c) > 1 && c[0] == '0') {
			return fmt.Errorf("version %q: want dot-separated decimal numbers without leading zeros, e.g. 1.4.2", v)
		}
	}
	return nil
}

// CompareVersions is -1, 0 or 1 as a is older than, the same as or newer
// than b, number by number; a version that extends another is newer
// ("1.0" after "1").
func CompareVersions(a, b string) (int, error) {
	for _, v := range []string{a, b} {
		if err := ValidVersion(v); err != nil {
			return 0, err
		}
	}
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			if x < y {
				return -1, nil
			}
			return 1, nil
		}
	}
	switch {
	case len(as) < len(bs):
		return -1, nil
	case len(as) > len(bs):
		return 1, nil
	}
	return 0, nil
}

// VersionField is the os-release field that holds a system's version: in
// the system's /etc/os-release, which the updater reads, and in its UKI's
// .osrel section, by which systemd-boot orders its boot entries.
const VersionField = "IMAGE_VERSION"

// OSReleaseVersion is the version an os-release's content gives
// (VersionField, its quotes removed), checked by ValidVersion.
func OSReleaseVersion(osrel []byte) (string, error) {
	for _, line := range strings.Split(string(osrel), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), VersionField+"="); ok {
			v = strings.Trim(v, `"'`)
			if err := ValidVersion(v); err != nil {
				return "", fmt.Errorf("%s of its os-release: %w", VersionField, err)
			}
			return v, nil
		}
	}
	return "", fmt.Errorf("its os-release has no %s", VersionField)
}
