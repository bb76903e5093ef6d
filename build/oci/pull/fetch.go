// Package pull fetches images pinned by digest from registries into OCI
// image layouts, verifying every blob, and keeps the lock file of pinned
// images (images/oci.lock.json) that resolves tags to digests. It is the
// only part of build/oci that talks to a registry; it must never resolve a
// tag except when asked to update the lock file.
package pull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/appliance-bundler/appliance/build/oci/validate"
)

// PinHint tells a user how to pin an image.
const PinHint = `pin it by digest: add it with its tag to images/oci.lock.json and run "bazel run //images:update_lock", or pass digest = "sha256:..."`

// Request names an image to fetch.
type Request struct {
	// Image is the repository, e.g. "docker.io/library/busybox"; a tag
	// in it is allowed as documentation but never used.
	Image string
	// Digest is the pinned digest of the index or manifest.
	Digest string
	// Platforms, as "os/arch[/variant]", narrow an index to those
	// platforms; empty keeps every platform.
	Platforms []string
}

// Fetch writes the image req names as an OCI image layout at dest, which
// must not exist or be empty. Every blob is checked against its digest as it
// is read (go-containerregistry's verifying readers) and again on disk.
func Fetch(ctx context.Context, req Request, dest string, opts ...remote.Option) error {
	ref, err := pinnedReference(req)
	if err != nil {
		return err
	}
	plats, err := parsePlatforms(req.Platforms)
	if err != nil {
		return fmt.Errorf("image %s: %w", req.Image, err)
	}
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	// remote.Get refuses a manifest whose bytes do not hash to the digest
	// asked for.
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return fmt.Errorf("failed to fetch %s: %w", ref, err)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("failed to create layout %s: %w", dest, err)
	}
	lp, err := layout.Write(dest, empty.Index)
	if err != nil {
		return fmt.Errorf("failed to start layout %s: %w", dest, err)
	}
	annotations := map[string]string{
		"org.opencontainers.image.base.name":   req.Image,
		"org.opencontainers.image.base.digest": req.Digest,
	}
	switch {
	case desc.MediaType.IsIndex():
		ii, err := desc.ImageIndex()
		if err != nil {
			return fmt.Errorf("failed to read index %s: %w", ref, err)
		}
		if err := writeIndex(ref, lp, ii, plats, annotations); err != nil {
			return err
		}
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return fmt.Errorf("failed to read manifest %s: %w", ref, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return fmt.Errorf("failed to read config of %s: %w", ref, err)
		}
		p := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
		if len(plats) > 0 && !matchesAny(p, plats) {
			return fmt.Errorf("image %s is a single %s image, not one of the requested platforms %v", ref, p.String(), req.Platforms)
		}
		if err := writeImage(ref, lp, img, p, annotations); err != nil {
			return err
		}
	default:
		return fmt.Errorf("image %s has media type %q, neither an index nor a manifest", ref, desc.MediaType)
	}
	if _, err := validate.Layout(dest); err != nil {
		return fmt.Errorf("fetched image %s failed verification: %w", ref, err)
	}
	return nil
}

// pinnedReference refuses anything not pinned by a sha256 digest.
func pinnedReference(req Request) (name.Digest, error) {
	repo := req.Image
	if i := strings.Index(repo, "@"); i >= 0 {
		return name.Digest{}, fmt.Errorf("image %q: give the digest in the digest field, not in the image", req.Image)
	}
	// Drop a tag: only the digest decides what is fetched.
	if r, err := name.ParseReference(repo); err == nil {
		repo = r.Context().Name()
	}
	if req.Digest == "" {
		return name.Digest{}, fmt.Errorf("image %s has no digest; a tag alone is not reproducible: %s", req.Image, PinHint)
	}
	if !strings.HasPrefix(req.Digest, "sha256:") {
		return name.Digest{}, fmt.Errorf("image %s: digest %q is not a sha256 digest", req.Image, req.Digest)
	}
	d, err := name.NewDigest(repo + "@" + req.Digest)
	if err != nil {
		return name.Digest{}, fmt.Errorf("image %s: invalid reference: %w", req.Image, err)
	}
	return d, nil
}

func parsePlatforms(specs []string) ([]v1.Platform, error) {
	var out []v1.Platform
	for _, s := range specs {
		p, err := v1.ParsePlatform(s)
		if err != nil {
			return nil, fmt.Errorf("invalid platform %q: %w", s, err)
		}
		if p.OS == "" || p.Architecture == "" {
			return nil, fmt.Errorf("invalid platform %q: want os/arch[/variant]", s)
		}
		out = append(out, *p)
	}
	return out, nil
}

func matchesAny(p v1.Platform, want []v1.Platform) bool {
	for _, w := range want {
		if p.OS == w.OS && p.Architecture == w.Architecture && (w.Variant == "" || p.Variant == w.Variant) {
			return true
		}
	}
	return false
}

// writeIndex writes an index. Narrowed to platforms, the layout's index.json
// lists the chosen manifests directly: the original index would reference
// manifests that are not in the layout. Its digest stays in the annotations.
func writeIndex(ref name.Digest, lp layout.Path, ii v1.ImageIndex, plats []v1.Platform, annotations map[string]string) error {
	if len(plats) == 0 {
		if err := lp.AppendIndex(ii, layout.WithAnnotations(annotations)); err != nil {
			return blobError(ref, err)
		}
		return nil
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return fmt.Errorf("failed to read index %s: %w", ref, err)
	}
	var have []string
	for _, want := range plats {
		found := false
		for _, d := range im.Manifests {
			if d.Platform == nil || !d.MediaType.IsImage() {
				continue
			}
			if !matchesAny(*d.Platform, []v1.Platform{want}) {
				continue
			}
			img, err := ii.Image(d.Digest)
			if err != nil {
				return fmt.Errorf("failed to read manifest %s of %s: %w", d.Digest, ref, err)
			}
			if err := writeImage(ref, lp, img, *d.Platform, annotations); err != nil {
				return err
			}
			found = true
			break
		}
		if !found {
			for _, d := range im.Manifests {
				if d.Platform != nil {
					have = append(have, d.Platform.String())
				}
			}
			return fmt.Errorf("image %s has no manifest for platform %s (it has %s)", ref, want.String(), strings.Join(have, ", "))
		}
	}
	return nil
}

// writeImage writes one image's blobs, layers one by one so that a failure
// names the blob, then its manifest.
func writeImage(ref name.Digest, lp layout.Path, img v1.Image, p v1.Platform, annotations map[string]string) error {
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("failed to list layers of %s: %w", ref, err)
	}
	for _, l := range layers {
		dg, err := l.Digest()
		if err != nil {
			return fmt.Errorf("failed to read a layer digest of %s: %w", ref, err)
		}
		if err := copyBlob(lp, l, dg); err != nil {
			return fmt.Errorf("failed to fetch blob %s of image %s: %w", dg, ref, err)
		}
	}
	if err := lp.AppendImage(img, layout.WithPlatform(p), layout.WithAnnotations(annotations)); err != nil {
		return blobError(ref, err)
	}
	return nil
}

// copyBlob reads a layer fully before keeping it: go-containerregistry
// checks the digest when the reader reaches its end, so a mismatch is an
// error here and the partial file is removed rather than left in the layout.
func copyBlob(lp layout.Path, l v1.Layer, dg v1.Hash) error {
	rc, err := l.Compressed()
	if err != nil {
		return verifyError(err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(string(lp), ".blob-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, rc); err != nil {
		tmp.Close()
		return verifyError(err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	f, err := os.Open(tmp.Name())
	if err != nil {
		return err
	}
	return lp.WriteBlob(dg, f)
}

// verifyError says in words what go-containerregistry's errors mean.
func verifyError(err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return fmt.Errorf("the registry does not have this blob (missing blob): %w", err)
	}
	if strings.Contains(err.Error(), "error verifying") {
		return fmt.Errorf("content does not match its digest, refusing it: %w", err)
	}
	return err
}

func blobError(ref name.Digest, err error) error {
	if strings.Contains(err.Error(), "error verifying") {
		return fmt.Errorf("image %s: a blob does not match its digest, refusing it: %w", ref, err)
	}
	return fmt.Errorf("failed to write image %s: %w", ref, err)
}
