// Command testkey writes an Ed25519 key pair derived from a seed string,
// for tests only: the same seed gives the same keys, so that the tests'
// payloads and appliances are reproducible. A release key must be random
// and kept out of the build (see signupdate).
package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"

	"github.com/appliance-bundler/appliance/core/updatepayload"
)

func main() {
	seed := flag.String("seed", "", "the seed string")
	priv := flag.String("private", "", "where to write the private key (PEM, PKCS #8)")
	pub := flag.String("public", "", "where to write the public key (PEM, PKIX)")
	flag.Parse()
	if err := run(*seed, *priv, *pub); err != nil {
		fmt.Fprintln(os.Stderr, "testkey:", err)
		os.Exit(1)
	}
}

func run(seed, priv, pub string) error {
	if seed == "" {
		return fmt.Errorf("-seed is required")
	}
	s := sha256.Sum256([]byte(seed))
	key := ed25519.NewKeyFromSeed(s[:])
	p, err := updatepayload.MarshalPrivateKey(key)
	if err != nil {
		return err
	}
	q, err := updatepayload.MarshalPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		return err
	}
	if err := os.WriteFile(priv, p, 0o600); err != nil {
		return err
	}
	return os.WriteFile(pub, q, 0o644)
}
