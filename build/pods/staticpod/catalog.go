package staticpod

import (
	"fmt"
	"sort"
	"strings"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
)

// provider is the bundle an image name resolves to.
type provider struct {
	file string
	// pinned is repo@<target digest>: the name preseed registers for the
	// image itself, which a moved tag cannot change.
	pinned string
}

// Catalog maps every name a pod may give an image (bundleformat.References:
// tag, repo@index digest, repo@manifest digest) to its bundle.
type Catalog struct {
	byName map[string]provider
}

// LoadBundles reads each bundle's metadata (not its layers) with the
// project's bundle reader. A name two bundles give to different images is
// an error: the pod's image would be ambiguous.
func LoadBundles(bundles []Bundle) (*Catalog, error) {
	cat := &Catalog{byName: map[string]provider{}}
	for _, b := range bundles {
		if b.Namespace != CRINamespace {
			return nil, fmt.Errorf("bundle %s is imported into containerd namespace %q, which the kubelet does not see: a static pod's images must be in %q", b.File, b.Namespace, CRINamespace)
		}
		e, err := bundle.Inspect(b.File)
		if err != nil {
			return nil, err
		}
		n, err := reference.ParseNormalizedNamed(e.Reference)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: image name %q: %w", b.File, e.Reference, err)
		}
		pinned, err := reference.WithDigest(reference.TrimNamed(n), e.Target.Digest)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: image name %q with digest %s: %w", b.File, e.Reference, e.Target.Digest, err)
		}
		p := provider{file: b.File, pinned: pinned.String()}
		for _, name := range e.References {
			if other, ok := cat.byName[name]; ok && other.pinned != p.pinned {
				return nil, fmt.Errorf("bundles %s and %s both provide image %s, as %s and %s", other.file, b.File, name, other.pinned, p.pinned)
			}
			cat.byName[name] = p
		}
	}
	return cat, nil
}

// Names lists every image name the bundles provide, sorted.
func (c *Catalog) Names() []string {
	names := make([]string, 0, len(c.byName))
	for n := range c.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Pin replaces the image of every init container and container of pod, read
// from file, by the digest reference of the bundle providing it, and sets
// imagePullPolicy Never. An image no bundle provides is an error naming the
// pod, file and image, and listing what the bundles provide.
func Pin(file string, pod *corev1.Pod, cat *Catalog) (*Info, error) {
	info := &Info{Name: pod.Name, Path: ManifestPath(pod.Name), Images: []Image{}}
	for _, c := range containers(pod) {
		name, err := normalize(c.Image)
		if err != nil {
			return nil, fmt.Errorf("pod %q in %s: container %q: %w", pod.Name, file, c.Name, err)
		}
		p, ok := cat.byName[name]
		if !ok {
			return nil, fmt.Errorf("pod %q in %s: container %q runs image %q (%s), which no bundle provides; the bundles provide: %s",
				pod.Name, file, c.Name, c.Image, name, provided(cat))
		}
		c.Image = p.pinned
		c.ImagePullPolicy = corev1.PullNever
		info.Images = append(info.Images, Image{Container: c.Name, Image: p.pinned})
	}
	return info, nil
}

func provided(cat *Catalog) string {
	names := cat.Names()
	if len(names) == 0 {
		return "nothing (no bundles given)"
	}
	return strings.Join(names, ", ")
}
