package staticpod_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/bundle/layouttest"
	"github.com/appliance-bundler/appliance/build/pods/staticpod"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// writeBundle bundles the layout as ref with the project's writer.
func writeBundle(t *testing.T, layoutDir, ref string, comp bundleformat.Compression, platforms ...string) string {
	t.Helper()
	var b bytes.Buffer
	if err := bundle.Write(&b, layoutDir, ref, comp, platforms...); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bundle"+comp.Ext())
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writePod(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fixture is two real bundles: web:2.0, a single image (zstd), and
// hello:1.0, an index of two platforms narrowed to linux/amd64.
type fixture struct {
	bundles          []staticpod.Bundle
	helloIndex       string // digest of the hello index: its pinned name
	helloAMD64       string // digest of its linux/amd64 manifest
	webManifest      string
	helloPinned      string
	webPinned        string
	helloAMD64Pinned string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	hello := layouttest.Index(t, "linux/amd64", "linux/arm64")
	web := layouttest.Single(t, "linux/amd64", "web\n")
	f := fixture{bundles: []staticpod.Bundle{
		{File: writeBundle(t, hello, "hello:1.0", bundleformat.None, "linux/amd64"), Namespace: "k8s.io"},
		{File: writeBundle(t, web, "web:2.0", bundleformat.Zstd), Namespace: "k8s.io"},
	}}
	f.helloIndex = layouttest.TopIndex(t, hello).Manifests[0].Digest.String()
	f.webManifest = layouttest.TopIndex(t, web).Manifests[0].Digest.String()
	e, err := bundle.Inspect(f.bundles[0].File)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Manifests) != 1 {
		t.Fatalf("hello bundle holds %d manifests, want the amd64 one", len(e.Manifests))
	}
	f.helloAMD64 = e.Manifests[0].Digest.String()
	f.helloPinned = "docker.io/library/hello@" + f.helloIndex
	f.webPinned = "docker.io/library/web@" + f.webManifest
	return f
}

const goodPod = `# A pod naming its images every way a pod may.
apiVersion: v1
kind: Pod
metadata:
  name: demo
  labels:
    app: demo
spec:
  restartPolicy: Never
  initContainers:
  - name: setup
    image: hello@%[1]s
  containers:
  - name: hello
    image: hello:1.0
    imagePullPolicy: Always
    command: ["/hello"]
  - name: hello-amd64
    image: docker.io/library/hello:1.0@%[2]s
  - name: web
    image: web:2.0
`

func TestBuildPinsImagesToBundles(t *testing.T) {
	f := newFixture(t)
	src := writePod(t, strings.NewReplacer("%[1]s", f.helloIndex, "%[2]s", f.helloAMD64).Replace(goodPod))
	out, info, err := staticpod.Build(src, "demo", f.bundles, staticpod.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rewritten pod:\n%s", out)
	pod, err := staticpod.Parse("out.yaml", out)
	if err != nil {
		t.Fatalf("the rewritten pod does not parse back: %v", err)
	}
	want := map[string]string{"setup": f.helloPinned, "hello": f.helloPinned, "hello-amd64": f.helloPinned, "web": f.webPinned}
	all := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	if len(all) != len(want) {
		t.Fatalf("rewritten pod has %d containers, want %d", len(all), len(want))
	}
	for _, c := range all {
		if c.Image != want[c.Name] {
			t.Errorf("container %s: image %q, want %q", c.Name, c.Image, want[c.Name])
		}
		if c.ImagePullPolicy != corev1.PullNever {
			t.Errorf("container %s: imagePullPolicy %q, want Never", c.Name, c.ImagePullPolicy)
		}
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever || pod.Labels["app"] != "demo" || pod.Spec.Containers[0].Command[0] != "/hello" {
		t.Errorf("the rest of the pod changed: %+v", pod)
	}
	if info.Name != "demo" || info.Path != "/etc/kubernetes/manifests/demo.yaml" {
		t.Errorf("info names %q at %q, want demo at /etc/kubernetes/manifests/demo.yaml", info.Name, info.Path)
	}
	wantImages := []staticpod.Image{{"setup", f.helloPinned}, {"hello", f.helloPinned}, {"hello-amd64", f.helloPinned}, {"web", f.webPinned}}
	if len(info.Images) != len(wantImages) {
		t.Fatalf("info images %v, want %v", info.Images, wantImages)
	}
	for i, im := range info.Images {
		if im != wantImages[i] {
			t.Errorf("info image %d: %v, want %v", i, im, wantImages[i])
		}
	}
	again, _, err := staticpod.Build(src, "demo", f.bundles, staticpod.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, again) {
		t.Errorf("two builds differ:\n%s\n---\n%s", out, again)
	}
}

// TestBuildRefusesBadInput checks that each bad input fails, naming the file
// and what is wrong.
func TestBuildRefusesBadInput(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, pod string
		want      []string
	}{{
		name: "unknown field",
		pod:  "apiVersion: v1\nkind: Pod\nmetadata:\n  name: demo\nspec:\n  containers:\n  - name: c\n    image: hello:1.0\n    imagePullPolicyy: Never\n",
		want: []string{`unknown field "spec.containers[0].imagePullPolicyy"`},
	}, {
		name: "duplicate field",
		pod:  "apiVersion: v1\nkind: Pod\nmetadata:\n  name: demo\n  name: other\nspec:\n  containers:\n  - name: c\n    image: hello:1.0\n",
		want: []string{`"name" already set in map`},
	}, {
		name: "unparseable YAML",
		pod:  "apiVersion: v1\nkind: Pod\nmetadata:\n  name: demo\nspec:\n  containers:\n  - name: c\n   image: hello:1.0\n",
		want: []string{"does not parse", "yaml: line 7: did not find expected key"},
	}, {
		name: "wrong type",
		pod:  "apiVersion: v1\nkind: Pod\nmetadata:\n  name: demo\nspec:\n  containers: hello\n",
		want: []string{"does not parse as a v1 Pod", "spec.containers"},
	}, {
		name: "wrong kind",
		pod:  "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: demo\n",
		want: []string{`apiVersion "apps/v1" and kind "Deployment"`, "want apiVersion v1 and kind Pod"},
	}, {
		name: "two documents",
		pod:  "apiVersion: v1\nkind: Pod\nmetadata:\n  name: demo\nspec:\n  containers:\n  - name: c\n    image: hello:1.0\n---\napiVersion: v1\nkind: Pod\n",
		want: []string{"holds 2 YAML documents"},
	}, {
		name: "image not preseeded",
		pod:  "apiVersion: v1\nkind: Pod\nmetadata:\n  name: demo\nspec:\n  containers:\n  - name: c\n    image: hello:2.0\n",
		want: []string{`pod "demo"`, `container "c" runs image "hello:2.0" (docker.io/library/hello:2.0), which no bundle provides`,
			// Every name a bundle provides, sorted: the digests' order is theirs.
			"the bundles provide: docker.io/library/hello:1.0, ", f.helloPinned + ",", "docker.io/library/web:2.0"},
	}, {
		name: "digest not preseeded",
		pod:  "apiVersion: v1\nkind: Pod\nmetadata:\n  name: demo\nspec:\n  containers:\n  - name: c\n    image: web@" + f.helloIndex + "\n",
		want: []string{`pod "demo"`, "docker.io/library/web@" + f.helloIndex + "), which no bundle provides"},
	}, {
		name: "name differs from the rule's",
		pod:  "apiVersion: v1\nkind: Pod\nmetadata:\n  name: other\nspec:\n  containers:\n  - name: c\n    image: hello:1.0\n",
		want: []string{`metadata.name is "other", but the rule names the pod "demo"`},
	}, {
		name: "invalid name",
		pod:  "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ../demo\nspec:\n  containers:\n  - name: c\n    image: hello:1.0\n",
		want: []string{`metadata.name "../demo" is invalid`},
	}, {
		name: "no containers",
		pod:  "apiVersion: v1\nkind: Pod\nmetadata:\n  name: demo\nspec: {}\n",
		want: []string{`pod "demo" has no containers`},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			src := writePod(t, tc.pod)
			_, _, err := staticpod.Build(src, "demo", f.bundles, staticpod.Options{})
			if err == nil {
				t.Fatal("Build succeeded")
			}
			t.Logf("error: %v", err)
			for _, w := range append([]string{src}, tc.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q", w)
				}
			}
		})
	}
}

func TestLoadBundlesRefuses(t *testing.T) {
	hello := writeBundle(t, layouttest.Single(t, "linux/amd64", "one\n"), "hello:1.0", bundleformat.None)
	other := writeBundle(t, layouttest.Single(t, "linux/amd64", "two\n"), "hello:1.0", bundleformat.Gzip)
	for _, tc := range []struct {
		name    string
		bundles []staticpod.Bundle
		want    []string
	}{{
		name:    "namespace the kubelet does not see",
		bundles: []staticpod.Bundle{{File: hello, Namespace: "default"}},
		want:    []string{hello, `namespace "default"`, `must be in "k8s.io"`},
	}, {
		name:    "one name, two images",
		bundles: []staticpod.Bundle{{File: hello, Namespace: "k8s.io"}, {File: other, Namespace: "k8s.io"}},
		want:    []string{hello, other, "both provide image docker.io/library/hello:1.0"},
	}, {
		name:    "not a bundle",
		bundles: []staticpod.Bundle{{File: writePod(t, "not a tar"), Namespace: "k8s.io"}},
		want:    []string{"pod.yaml"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := staticpod.LoadBundles(tc.bundles)
			if err == nil {
				t.Fatal("LoadBundles succeeded")
			}
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q", w)
				}
			}
		})
	}
}

// TestImageWithoutTagIsLatest: the CRI reads "busybox" as busybox:latest, so
// a bundle of busybox:latest provides it.
func TestImageWithoutTagIsLatest(t *testing.T) {
	b := writeBundle(t, layouttest.Single(t, "linux/amd64", "bb\n"), "busybox:latest", bundleformat.None)
	cat, err := staticpod.LoadBundles([]staticpod.Bundle{{File: b, Namespace: "k8s.io"}})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	pod.Name = "bb"
	info, err := staticpod.Pin("pod.yaml", pod, cat)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info.Images[0].Image, "docker.io/library/busybox@sha256:") {
		t.Errorf("busybox pinned as %q", info.Images[0].Image)
	}
}
