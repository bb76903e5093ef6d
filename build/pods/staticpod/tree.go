package staticpod

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/node"
)

// TreePod is one pinned pod manifest (a static_pod output) to place in an
// appliance.
type TreePod struct {
	// Name is the pod's name as its rule states it.
	Name string `json:"name"`
	// File is the pinned manifest on the build machine.
	File string `json:"file"`
}

// Pods lists an appliance's static pods, sorted by name: what the release
// manifest carries.
type Pods struct {
	Pods []Info `json:"pods"`
}

// WriteTree checks pods against the appliance's preseed manifest (the file
// manifestFile, a bundleformat.Manifest) and writes to w a tar holding
// etc/kubernetes/manifests/ and each pod at <name>.yaml in it (directories
// 0755, files 0644, owner 0:0, fixed mtime, sorted). It returns the encoded
// Pods listing. A pod whose image is no reference of a bundle the manifest
// lists for the CRI's namespace, an image not pinned by digest, or two pods
// of one name are errors: the kubelet could not start such a pod without a
// pull.
func WriteTree(w io.Writer, pods []TreePod, manifestFile string) ([]byte, error) {
	refs, err := preseededRefs(manifestFile)
	if err != nil {
		return nil, err
	}
	type placed struct {
		info *Info
		data []byte
	}
	byName := map[string]TreePod{}
	for _, p := range pods {
		if other, dup := byName[p.Name]; dup {
			return nil, fmt.Errorf("pod manifests %s and %s both name a pod %q: the appliance holds one manifest per name", other.File, p.File, p.Name)
		}
		byName[p.Name] = p
	}
	var all []placed
	for _, p := range pods {
		info, data, err := checkPod(p, refs, manifestFile)
		if err != nil {
			return nil, err
		}
		all = append(all, placed{info, data})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].info.Name < all[j].info.Name })

	tw := tar.NewWriter(w)
	for _, d := range []string{"etc", "etc/kubernetes", strings.TrimPrefix(node.StaticPodDir, "/")} {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: bundleformat.ModTime(), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("failed to write directory %s: %w", d, err)
		}
	}
	listing := Pods{Pods: []Info{}}
	for _, p := range all {
		name := strings.TrimPrefix(p.info.Path, "/")
		if err := tw.WriteHeader(bundleformat.Header(name, int64(len(p.data)))); err != nil {
			return nil, fmt.Errorf("failed to write %s: %w", name, err)
		}
		if _, err := tw.Write(p.data); err != nil {
			return nil, fmt.Errorf("failed to write %s: %w", name, err)
		}
		listing.Pods = append(listing.Pods, *p.info)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("failed to finish the static pods tar: %w", err)
	}
	out, err := json.MarshalIndent(listing, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("failed to encode the pods listing: %w", err)
	}
	return append(out, '\n'), nil
}

// preseededRefs returns every name the manifest's bundles of the CRI's
// namespace register, with the bundle's path.
func preseededRefs(manifestFile string) (map[string]string, error) {
	data, err := os.ReadFile(manifestFile)
	if err != nil {
		return nil, fmt.Errorf("failed to read the preseed manifest: %w", err)
	}
	m, err := bundleformat.ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("preseed manifest %s: %w", manifestFile, err)
	}
	refs := map[string]string{}
	for _, e := range m.Bundles {
		if e.Namespace != CRINamespace {
			continue
		}
		for _, r := range e.References {
			refs[r] = e.Path
		}
	}
	return refs, nil
}

// checkPod reads the pinned manifest of p and checks that it is the pod p
// names, at the kubelet's path, and that each image is pinned by digest to
// a bundle of the manifest.
func checkPod(p TreePod, refs map[string]string, manifestFile string) (*Info, []byte, error) {
	data, err := readFile(p.File)
	if err != nil {
		return nil, nil, err
	}
	pod, err := Parse(p.File, data)
	if err != nil {
		return nil, nil, err
	}
	if pod.Name != p.Name {
		return nil, nil, fmt.Errorf("pod manifest %s: metadata.name is %q, but it is placed as pod %q", p.File, pod.Name, p.Name)
	}
	info := &Info{Name: pod.Name, Path: ManifestPath(pod.Name), Images: []Image{}}
	for _, c := range containers(pod) {
		if err := checkImage(c, refs); err != nil {
			return nil, nil, fmt.Errorf("pod %q (%s): container %q: %w; the appliance's preseed manifest is %s", pod.Name, p.File, c.Name, err, manifestFile)
		}
		info.Images = append(info.Images, Image{Container: c.Name, Image: c.Image})
	}
	return info, data, nil
}

func checkImage(c *corev1.Container, refs map[string]string) error {
	n, err := reference.ParseNormalizedNamed(c.Image)
	if err != nil {
		return fmt.Errorf("invalid image reference %q: %w", c.Image, err)
	}
	if _, ok := n.(reference.Digested); !ok || c.ImagePullPolicy != corev1.PullNever {
		return fmt.Errorf("image %q with imagePullPolicy %q is not pinned (want repo@sha256:... and Never, as static_pod writes)", c.Image, c.ImagePullPolicy)
	}
	if _, ok := refs[c.Image]; !ok {
		return fmt.Errorf("image %s is not preseeded: no bundle of namespace %q in the appliance's preseed manifest has that reference", c.Image, CRINamespace)
	}
	return nil
}
