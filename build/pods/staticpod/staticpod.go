// Package staticpod turns a pod manifest into the static pod an appliance's
// kubelet runs from /etc/kubernetes/manifests: the pod is parsed strictly
// with Kubernetes' own API types, and each container's image is replaced by
// the digest reference of the preseed bundle that provides it, with
// imagePullPolicy Never, so the pod runs exactly what was preseeded and
// never pulls. It must not talk to a registry or to containerd, nor read a
// bundle's layers; full pod validation is the kubelet's.
package staticpod

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/appliance-bundler/appliance/core/node"
)

// CRINamespace is the containerd namespace the kubelet's CRI sees: a bundle
// imported anywhere else is invisible to pods.
const CRINamespace = "k8s.io"

// Bundle is a preseed bundle a pod may take its images from.
type Bundle struct {
	// File is the bundle on the build machine.
	File string `json:"file"`
	// Namespace is the containerd namespace it is imported into.
	Namespace string `json:"namespace"`
}

// Image is what one container runs.
type Image struct {
	Container string `json:"container"`
	// Image is the digest reference, repo@sha256:....
	Image string `json:"image"`
}

// Info describes a static pod for the appliance and release rules.
type Info struct {
	Name string `json:"name"`
	// Path is where the manifest goes in the appliance.
	Path string `json:"path"`
	// Images lists init containers, then containers, in the pod's order.
	Images []Image `json:"images"`
}

// ManifestPath is where the kubelet finds the static pod named name.
func ManifestPath(name string) string {
	return path.Join(node.StaticPodDir, name+".yaml")
}

// Options change how Build treats a pod.
type Options struct {
	// StrictPrivileges makes privileges without a reason (CheckPrivileges)
	// fail the build; without it they are given to Warn.
	StrictPrivileges bool
	// Warn receives each warning; nil drops them.
	Warn func(error)
}

// Build reads the pod manifest src, checks that its metadata.name is
// wantName and its privileges (CheckPrivileges, under opts), pins its
// images to bundles and returns the rewritten manifest (deterministic
// bytes) and its Info.
func Build(src, wantName string, bundles []Bundle, opts Options) ([]byte, *Info, error) {
	data, err := readFile(src)
	if err != nil {
		return nil, nil, err
	}
	pod, err := Parse(src, data)
	if err != nil {
		return nil, nil, err
	}
	if err := CheckPrivileges(src, pod); err != nil {
		if opts.StrictPrivileges {
			return nil, nil, err
		}
		if opts.Warn != nil {
			opts.Warn(err)
		}
	}
	if pod.Name != wantName {
		return nil, nil, fmt.Errorf("pod manifest %s: metadata.name is %q, but the rule names the pod %q: they must agree (the appliance places the file by the rule's name)", src, pod.Name, wantName)
	}
	cat, err := LoadBundles(bundles)
	if err != nil {
		return nil, nil, err
	}
	info, err := Pin(src, pod, cat)
	if err != nil {
		return nil, nil, err
	}
	out, err := Encode(pod)
	if err != nil {
		return nil, nil, fmt.Errorf("pod manifest %s: %w", src, err)
	}
	return out, info, nil
}

// codec decodes and encodes v1 Pods as YAML, strictly: an unknown or
// duplicate field is an error naming its path.
func codec() (*kjson.Serializer, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("failed to register the core/v1 types: %w", err)
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true}), nil
}

// Parse decodes data, the contents of file, as exactly one v1 Pod with a
// valid name and named, unique containers. Errors name file.
func Parse(file string, data []byte) (*corev1.Pod, error) {
	n, err := countDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("pod manifest %s does not parse: %w", file, err)
	}
	if n != 1 {
		return nil, fmt.Errorf("pod manifest %s holds %d YAML documents, want exactly one Pod", file, n)
	}
	// The type first, leniently, so that a wrong kind is reported as such
	// rather than as fields a Pod does not have.
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(data, &tm); err != nil {
		return nil, fmt.Errorf("pod manifest %s does not parse: %w", file, err)
	}
	if tm.APIVersion != "v1" || tm.Kind != "Pod" {
		return nil, fmt.Errorf("pod manifest %s has apiVersion %q and kind %q, want apiVersion v1 and kind Pod", file, tm.APIVersion, tm.Kind)
	}
	c, err := codec()
	if err != nil {
		return nil, err
	}
	obj, _, err := c.Decode(data, nil, &corev1.Pod{})
	if err != nil {
		if runtime.IsStrictDecodingError(err) {
			return nil, fmt.Errorf("pod manifest %s is not a valid v1 Pod: %w", file, err)
		}
		return nil, fmt.Errorf("pod manifest %s does not parse as a v1 Pod: %w", file, err)
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, fmt.Errorf("pod manifest %s decodes to %T, want a v1 Pod", file, obj)
	}
	if err := checkNames(pod); err != nil {
		return nil, fmt.Errorf("pod manifest %s: %w", file, err)
	}
	return pod, nil
}

// countDocuments counts the YAML documents of data that hold more than
// comments and blank lines.
func countDocuments(data []byte) (int, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	n := 0
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, fmt.Errorf("failed to split YAML documents: %w", err)
		}
		if hasContent(doc) {
			n++
		}
	}
}

func hasContent(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && line != "---" && !strings.HasPrefix(line, "#") {
			return true
		}
	}
	return false
}

// checkNames refuses what would make the file name or the Info ambiguous:
// the pod's name becomes a file name, container names key its images.
func checkNames(pod *corev1.Pod) error {
	if pod.Name == "" {
		return errors.New("metadata.name is missing")
	}
	if errs := validation.IsDNS1123Subdomain(pod.Name); len(errs) > 0 {
		return fmt.Errorf("metadata.name %q is invalid: %s", pod.Name, strings.Join(errs, "; "))
	}
	if len(pod.Spec.Containers) == 0 {
		return fmt.Errorf("pod %q has no containers", pod.Name)
	}
	if len(pod.Spec.EphemeralContainers) > 0 {
		return fmt.Errorf("pod %q has ephemeralContainers, which a static pod cannot have", pod.Name)
	}
	seen := map[string]bool{}
	for _, c := range containers(pod) {
		if c.Name == "" {
			return fmt.Errorf("pod %q has a container without a name", pod.Name)
		}
		if seen[c.Name] {
			return fmt.Errorf("pod %q has two containers named %q", pod.Name, c.Name)
		}
		seen[c.Name] = true
	}
	return nil
}

// containers returns pointers to the init containers, then the containers.
func containers(pod *corev1.Pod) []*corev1.Container {
	var out []*corev1.Container
	for i := range pod.Spec.InitContainers {
		out = append(out, &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		out = append(out, &pod.Spec.Containers[i])
	}
	return out
}

// Encode writes pod as YAML: keys sorted, so the same pod gives the same
// bytes.
func Encode(pod *corev1.Pod) ([]byte, error) {
	c, err := codec()
	if err != nil {
		return nil, err
	}
	pod.APIVersion, pod.Kind = "v1", "Pod"
	var buf bytes.Buffer
	if err := c.Encode(pod, &buf); err != nil {
		return nil, fmt.Errorf("failed to encode pod %q: %w", pod.Name, err)
	}
	return buf.Bytes(), nil
}

func readFile(name string) ([]byte, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("failed to read pod manifest %s: %w", name, err)
	}
	return data, nil
}

// JSON is i encoded for the rules, indented, with a final newline.
func (i *Info) JSON() ([]byte, error) {
	data, err := json.MarshalIndent(i, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("failed to encode pod info of %q: %w", i.Name, err)
	}
	return append(data, '\n'), nil
}

// normalize names image as the CRI resolves it: fully qualified, ":latest"
// when it has neither tag nor digest, and by digest alone when it has one.
func normalize(image string) (string, error) {
	n, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", fmt.Errorf("invalid image reference %q: %w", image, err)
	}
	if d, ok := n.(reference.Digested); ok {
		r, err := reference.WithDigest(reference.TrimNamed(n), d.Digest())
		if err != nil {
			return "", fmt.Errorf("invalid image reference %q: %w", image, err)
		}
		return r.String(), nil
	}
	return reference.TagNameOnly(n).String(), nil
}
