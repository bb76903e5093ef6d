// Package tarball turns an image tarball a user already has (docker save
// output, go-containerregistry's tarball format, an OCI-layout archive as
// skopeo or ctr export write it; plain, gzip or zstd) into an OCI image
// layout holding one image, for build/oci's oci_from_tarball rule.
//
// An OCI-layout tarball's index and manifest blobs are copied byte for byte,
// so the image keeps its digest; a docker-save image gets a deterministic
// OCI manifest over its config and layers as they are. Every blob is checked
// against its digest and every entry's path against escaping the archive.
// It must not talk to a registry or to containerd, nor change an image's
// content.
package tarball

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/opencontainers/go-digest"
)

// maxJSON bounds the size of a manifest, index or config read into memory.
const maxJSON = 16 << 20

// Result describes the image written.
type Result struct {
	// Digest is the digest of the image's manifest or index: the layout's
	// only index.json entry.
	Digest digest.Digest
	// MediaType is that entry's media type.
	MediaType string
	// Platforms, for an index of which the tarball holds only some
	// manifests, are the held ones (bundleformat.AnnotationPlatforms); nil
	// when all are held or the image is a single manifest.
	Platforms []string
}

// Load reads the tarball at tarPath and writes the image selector names as
// an OCI layout at dest, which must not exist or be empty. selector may be
// empty when the tarball holds one image. Errors name the tarball.
func Load(ctx context.Context, tarPath, selector, dest string) (*Result, error) {
	res, err := load(ctx, tarPath, selector, dest)
	if err != nil {
		return nil, fmt.Errorf("image tarball %s: %w", tarPath, err)
	}
	return res, nil
}

func load(ctx context.Context, tarPath, selector, dest string) (*Result, error) {
	sel, err := parseSelector(selector)
	if err != nil {
		return nil, err
	}
	scratch, err := os.MkdirTemp("", "oci-from-tarball-")
	if err != nil {
		return nil, fmt.Errorf("failed to create a scratch directory: %w", err)
	}
	defer os.RemoveAll(scratch)
	a, err := unpack(ctx, tarPath, scratch)
	if err != nil {
		return nil, err
	}
	lp, err := startLayout(dest)
	if err != nil {
		return nil, err
	}
	// containerd's export and Docker 25's save write both index.json and
	// manifest.json: the OCI index keeps the image's own digest.
	switch {
	case a.exists("index.json"):
		return loadOCI(a, sel, lp)
	case a.exists("manifest.json"):
		return loadDocker(a, sel, lp)
	}
	return nil, errors.New("holds neither index.json (an OCI layout) nor manifest.json (docker save): not an image tarball")
}

func startLayout(dest string) (layout.Path, error) {
	if entries, err := os.ReadDir(dest); err == nil && len(entries) > 0 {
		return "", fmt.Errorf("output %s is not empty", dest)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return "", fmt.Errorf("failed to create layout %s: %w", dest, err)
	}
	lp, err := layout.Write(dest, empty.Index)
	if err != nil {
		return "", fmt.Errorf("failed to start layout %s: %w", dest, err)
	}
	return lp, nil
}

// selector names the image to take from a tarball.
type selector struct {
	raw    string
	digest digest.Digest
	name   string // normalised reference, "" if raw is none
}

func parseSelector(raw string) (selector, error) {
	s := selector{raw: raw}
	switch {
	case raw == "":
	case strings.HasPrefix(raw, "sha256:"):
		d, err := digest.Parse(raw)
		if err != nil {
			return s, fmt.Errorf("image selector %q is not a valid digest: %w", raw, err)
		}
		s.digest = d
	default:
		s.name = normalise(raw)
	}
	return s, nil
}

// normalise spells a reference as containerd does ("busybox" becomes
// "docker.io/library/busybox:latest"); "" if it is not one.
func normalise(ref string) string {
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ""
	}
	return reference.TagNameOnly(n).String()
}

// candidate is one image of a tarball.
type candidate struct {
	id      digest.Digest // what makes two entries the same image
	digests []digest.Digest
	names   []string
}

func (c candidate) matches(s selector) bool {
	if s.digest != "" {
		return slices.Contains(c.digests, s.digest)
	}
	for _, n := range c.names {
		if n == s.raw || (s.name != "" && normalise(n) == s.name) {
			return true
		}
	}
	return false
}

func (c candidate) String() string {
	if len(c.names) == 0 {
		return c.id.String() + " (no name)"
	}
	return strings.Join(c.names, ", ") + " (" + c.id.String() + ")"
}

// choose returns the index of the one candidate s selects. Entries of one
// image (e.g. two tags) count once.
func choose(s selector, cands []candidate, how string) (int, error) {
	var all []string
	for _, c := range cands {
		all = append(all, "\n  "+c.String())
	}
	holds := "it holds:" + strings.Join(all, "")
	if len(cands) == 0 {
		return 0, errors.New("holds no image")
	}
	found, ids := -1, map[digest.Digest]bool{}
	for i, c := range cands {
		if s.raw == "" || c.matches(s) {
			if found < 0 {
				found = i
			}
			ids[c.id] = true
		}
	}
	switch {
	case found < 0:
		return 0, fmt.Errorf("holds no image %q; %s", s.raw, holds)
	case len(ids) > 1 && s.raw == "":
		return 0, fmt.Errorf("holds %d images: choose one with image = (%s); %s", len(ids), how, holds)
	case len(ids) > 1:
		return 0, fmt.Errorf("image %q is ambiguous: it matches %d images; %s", s.raw, len(ids), holds)
	}
	return found, nil
}

// writeBlob copies a blob from the archive into the layout after checking
// it against the descriptor: size and sha256 were taken while unpacking.
func writeBlob(a *archive, lp layout.Path, name string, d v1.Descriptor, what string) error {
	if d.Digest.Algorithm != "sha256" {
		return fmt.Errorf("%s %s: only sha256 digests are supported", what, d.Digest)
	}
	f, err := a.lookup(name)
	if err != nil {
		return fmt.Errorf("%s %s is missing: %w", what, d.Digest, err)
	}
	if f.digest.String() != d.Digest.String() {
		return fmt.Errorf("%s %q does not match its digest: it has %s, want %s", what, name, f.digest, d.Digest)
	}
	if f.size != d.Size {
		return fmt.Errorf("%s %q has %d bytes, its descriptor says %d", what, name, f.size, d.Size)
	}
	r, err := os.Open(f.path)
	if err != nil {
		return fmt.Errorf("failed to read %s %q: %w", what, name, err)
	}
	if err := lp.WriteBlob(d.Digest, r); err != nil {
		return fmt.Errorf("failed to write %s %s to %s: %w", what, d.Digest, filepath.Clean(string(lp)), err)
	}
	return nil
}
