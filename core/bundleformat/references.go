package bundleformat

import (
	"fmt"
	"slices"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// AnnotationPlatforms, on the index.json descriptor of an image index (in a
// layout or a bundle), lists the platforms whose manifests, configs and
// layers the layout holds, as FormatPlatform spells them, sorted and joined
// by commas. The index's other manifests are absent, as in containerd's
// export with a platform filter: readers follow only the listed ones, so the
// image keeps the digest it was pinned by. Without it, every manifest of the
// index is held.
const AnnotationPlatforms = "dev.appliance-bundler.platforms"

// References returns every name preseed registers for the image name (a
// full, normalised reference with a tag or a digest) whose target has the
// digest target: name itself, repo@target and, for an index, repo@<digest>
// of each of manifests: the platform manifest that is unpacked (preseed) or
// every one the bundle holds (the preseed manifest).
// These are the names a pod may give: the tag, the digest an image is
// pinned by (for an index, what Kubernetes manifests and lock files record)
// and the digest of what runs. Each appears once; name comes first.
func References(name string, target digest.Digest, manifests ...digest.Digest) ([]string, error) {
	n, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return nil, fmt.Errorf("image name %q: %w", name, err)
	}
	if n.String() != name {
		return nil, fmt.Errorf("image name %q is not normalised (want %q)", name, n.String())
	}
	if d, ok := n.(reference.Digested); ok && d.Digest() != target {
		return nil, fmt.Errorf("image name %q names digest %s, but the image's target is %s", name, d.Digest(), target)
	}
	repo := reference.TrimNamed(n)
	out := []string{name}
	for _, d := range append([]digest.Digest{target}, manifests...) {
		r, err := reference.WithDigest(repo, d)
		if err != nil {
			return nil, fmt.Errorf("image name %q with digest %s: %w", name, d, err)
		}
		if s := r.String(); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}
