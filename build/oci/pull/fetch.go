// Package pull fetches images pinned by digest from registries into OCI
// image layouts, verifying every blob, and keeps the lock file of pinned
// images (images/oci.lock.json) that resolves tags to digests. It is the
// only part of build/oci that talks to a registry; it must never resolve a
// tag except when asked to update the lock file.
package pull

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/build/oci/validate"
	"github.com/appliance-bundler/appliance/core/bundleformat"
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
	// Mirrors are repositories holding the same image, tried in order
	// before Image, for sites that reach only their own mirror. Every blob
	// is checked against the pinned digest, so a mirror cannot change
	// what is fetched, only fail to serve it.
	Mirrors []string
}

// Fetch writes the image req names as an OCI image layout at dest, which
// must not exist or be empty. Every blob is checked against its digest as it
// is read (go-containerregistry's verifying readers) and again on disk. The
// mirrors are tried in order, then the image's own repository; the error
// when all fail names each source and its failure.
func Fetch(ctx context.Context, req Request, dest string, opts ...remote.Option) error {
	if _, err := pinnedReference(req); err != nil {
		return err
	}
	plats, err := parsePlatforms(req.Platforms)
	if err != nil {
		return fmt.Errorf("image %s: %w", req.Image, err)
	}
	for _, m := range req.Mirrors {
		if _, err := name.NewRepository(m); err != nil {
			return fmt.Errorf("image %s: mirror %q is not a repository name (no tag or digest): %w", req.Image, m, err)
		}
	}
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	sources := append(append([]string(nil), req.Mirrors...), req.Image)
	var failures []string
	for i, src := range sources {
		if err := emptyDir(dest); err != nil {
			return err
		}
		err := fetchFrom(src, req, plats, dest, opts)
		if err == nil {
			return nil
		}
		if len(sources) == 1 || ctx.Err() != nil {
			return err
		}
		what := fmt.Sprintf("mirror %d of %d", i+1, len(req.Mirrors))
		if i == len(sources)-1 {
			what = "the image's own repository"
		}
		failures = append(failures, fmt.Sprintf("%s (%s): %v", src, what, err))
	}
	return fmt.Errorf("failed to fetch %s@%s from any of its %d sources, tried in order:\n  %s",
		req.Image, req.Digest, len(sources), strings.Join(failures, "\n  "))
}

// emptyDir makes dest an empty directory, dropping what a failed source
// left, so that a layout never mixes the blobs of two attempts.
func emptyDir(dest string) error {
	if err := os.RemoveAll(dest); err != nil {
		return fmt.Errorf("failed to clear layout %s: %w", dest, err)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("failed to create layout %s: %w", dest, err)
	}
	return nil
}

// fetchFrom fetches the pinned image from the repository src (the image's
// own or a mirror) into the empty directory dest and validates the result.
func fetchFrom(src string, req Request, plats []v1.Platform, dest string, opts []remote.Option) error {
	ref, err := pinnedReference(Request{Image: src, Digest: req.Digest})
	if err != nil {
		return err
	}
	// remote.Get refuses a manifest whose bytes do not hash to the digest
	// asked for.
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return fmt.Errorf("failed to fetch %s: %w", ref, err)
	}
	lp, err := layout.Write(dest, empty.Index)
	if err != nil {
		return fmt.Errorf("failed to start layout %s: %w", dest, err)
	}
	// The image's own name, whichever source served it: the digest makes
	// them the same image.
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
		if err := writeSingle(ref, lp, desc, plats, annotations); err != nil {
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

// writeSingle writes a single-manifest image, refusing it when platforms
// were asked for and it is not one of them.
func writeSingle(ref name.Digest, lp layout.Path, desc *remote.Descriptor, plats []v1.Platform, annotations map[string]string) error {
	img, p, err := singleImage(ref, desc)
	if err != nil {
		return err
	}
	if len(plats) > 0 && !matchesAny(p, plats) {
		return fmt.Errorf("image %s is a single %s image, not one of the requested platforms %v", ref, p.String(), platformStrings(plats))
	}
	if err := writeImageBlobs(ref, lp, img); err != nil {
		return err
	}
	if err := lp.AppendImage(img, layout.WithPlatform(p), layout.WithAnnotations(annotations)); err != nil {
		return blobError(ref, err)
	}
	return nil
}

// singleImage reads the manifest desc names and the platform its config
// declares.
func singleImage(ref name.Digest, desc *remote.Descriptor) (v1.Image, v1.Platform, error) {
	img, err := desc.Image()
	if err != nil {
		return nil, v1.Platform{}, fmt.Errorf("failed to read manifest %s: %w", ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, v1.Platform{}, fmt.Errorf("failed to read config of %s: %w", ref, err)
	}
	return img, v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}, nil
}

func platformStrings(plats []v1.Platform) []string {
	out := make([]string, 0, len(plats))
	for _, p := range plats {
		out = append(out, p.String())
	}
	return out
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

// writeIndex writes an index. Narrowed to platforms, the layout keeps the
// original index blob unchanged, so the image keeps its pinned digest, and
// holds only the kept platforms' manifests, configs and layers; index.json's
// descriptor lists them in bundleformat.AnnotationPlatforms, as containerd's
// export with a platform filter leaves the other manifests out.
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
	kept, err := keptManifests(ref, im, plats)
	if err != nil {
		return err
	}
	var held []string
	for _, d := range kept {
		img, err := ii.Image(d.Digest)
		if err != nil {
			return fmt.Errorf("failed to read manifest %s of %s: %w", d.Digest, ref, err)
		}
		if err := writeImageBlobs(ref, lp, img); err != nil {
			return err
		}
		held = append(held, bundleformat.FormatPlatform(ocispec.Platform{OS: d.Platform.OS, Architecture: d.Platform.Architecture, Variant: d.Platform.Variant}))
	}
	return writeOriginalIndex(ref, lp, ii, held, annotations)
}

// writeOriginalIndex writes the index blob byte for byte as the registry
// served it (remote.Get checked it against the pinned digest) and names it
// in index.json with the platforms held.
func writeOriginalIndex(ref name.Digest, lp layout.Path, ii v1.ImageIndex, held []string, annotations map[string]string) error {
	raw, err := ii.RawManifest()
	if err != nil {
		return fmt.Errorf("failed to read index %s: %w", ref, err)
	}
	mt, err := ii.MediaType()
	if err != nil {
		return fmt.Errorf("failed to read the media type of index %s: %w", ref, err)
	}
	h, err := v1.NewHash(ref.DigestStr())
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	if err := lp.WriteBlob(h, io.NopCloser(bytes.NewReader(raw))); err != nil {
		return blobError(ref, err)
	}
	sort.Strings(held)
	ann := map[string]string{bundleformat.AnnotationPlatforms: strings.Join(held, ",")}
	for k, v := range annotations {
		ann[k] = v
	}
	desc := v1.Descriptor{MediaType: mt, Digest: h, Size: int64(len(raw)), Annotations: ann}
	if err := lp.AppendDescriptor(desc); err != nil {
		return fmt.Errorf("failed to write index.json of layout %s: %w", lp, err)
	}
	return nil
}

// keptManifests picks, for each requested platform, the first manifest of
// the index that serves it; a platform the index lacks is an error naming
// what it has.
func keptManifests(ref name.Digest, im *v1.IndexManifest, plats []v1.Platform) ([]v1.Descriptor, error) {
	var kept []v1.Descriptor
	seen := map[v1.Hash]bool{}
	for _, want := range plats {
		found := false
		for _, d := range im.Manifests {
			if d.Platform == nil || !d.MediaType.IsImage() || !matchesAny(*d.Platform, []v1.Platform{want}) {
				continue
			}
			if !seen[d.Digest] {
				seen[d.Digest] = true
				kept = append(kept, d)
			}
			found = true
			break
		}
		if !found {
			var have []string
			for _, d := range im.Manifests {
				if d.Platform != nil {
					have = append(have, d.Platform.String())
				}
			}
			return nil, fmt.Errorf("image %s has no manifest for platform %s (it has %s)", ref, want.String(), strings.Join(have, ", "))
		}
	}
	return kept, nil
}

// writeImageBlobs writes one image's blobs (layers one by one so that a
// failure names the blob, then its config and manifest), not index.json.
func writeImageBlobs(ref name.Digest, lp layout.Path, img v1.Image) error {
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
	if err := lp.WriteImage(img); err != nil {
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
