// Command signupdate signs an update payload's manifest with an Ed25519
// private key (PEM, PKCS #8: `openssl genpkey -algorithm ed25519`) and
// writes the signature (core/updatepayload.SignatureFile).
//
// Releases are signed with it out of the build, so that the private key
// never enters the tree, an action's inputs, a cache or an output:
//
//	bazel run //build/update/cmd/signupdate -- -key ~/release.pem \
//	    -payload "$PWD/bazel-bin/images/release/update" -out /srv/updates
//
// copies the payload's files to -out and signs them there. With -manifest
// and -sig it signs one manifest (the tests' payloads, with a test key).
package main

import (
	"crypto/ed25519"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/appliance-bundler/appliance/core/updatepayload"
)

func main() {
	keyFile := flag.String("key", "", "the Ed25519 private key (PEM, PKCS #8)")
	payload := flag.String("payload", "", "a payload's directory (mkupdate's files) to copy to -out and sign")
	out := flag.String("out", "", "the directory to publish the signed payload in")
	manifest := flag.String("manifest", "", "a manifest to sign (instead of -payload)")
	sig := flag.String("sig", "", "where to write -manifest's signature")
	flag.Parse()
	if err := run(*keyFile, *payload, *out, *manifest, *sig); err != nil {
		fmt.Fprintln(os.Stderr, "signupdate:", err)
		os.Exit(1)
	}
}

func run(keyFile, payload, out, manifest, sig string) error {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	key, err := updatepayload.ParsePrivateKey(b)
	if err != nil {
		return fmt.Errorf("the key %s: %w", keyFile, err)
	}
	switch {
	case manifest != "" && sig != "" && payload == "" && out == "":
		return sign(key, manifest, sig)
	case payload != "" && out != "" && manifest == "" && sig == "":
		return publish(key, payload, out)
	}
	return fmt.Errorf("give -payload and -out, or -manifest and -sig")
}

func sign(key ed25519.PrivateKey, manifest, sig string) error {
	b, err := os.ReadFile(manifest)
	if err != nil {
		return err
	}
	// Refuse what the appliance would refuse, before it is published.
	if _, err := updatepayload.Verify(key.Public().(ed25519.PublicKey), b, updatepayload.Sign(key, b)); err != nil {
		return fmt.Errorf("%s: %w", manifest, err)
	}
	return os.WriteFile(sig, updatepayload.Sign(key, b), 0o644)
}

// publish copies the payload's files to out, the manifest last but for its
// signature, so that an updater polling out never sees a manifest whose
// files are not all there.
func publish(key ed25519.PrivateKey, payload, out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, name := range []string{updatepayload.SystemFile, updatepayload.UKIFile, updatepayload.ManifestFile} {
		if err := copyFile(filepath.Join(payload, name), filepath.Join(out, name)); err != nil {
			return err
		}
	}
	return sign(key, filepath.Join(out, updatepayload.ManifestFile), filepath.Join(out, updatepayload.SignatureFile))
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("failed to copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
