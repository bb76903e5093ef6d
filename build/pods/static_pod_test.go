// Package pods_test checks the static_pod and static_pods rules as a build
// uses them: the outputs for the hello pod, the production appliance's pods
// tar and listing, and the tool's errors on bad manifests and on a pod
// whose image the appliance does not preseed.
package pods_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/appliance-bundler/appliance/build/pods/staticpod"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// TestHelloPod checks the static_pod rule's outputs for the hello pod: its
// image pinned to the digest of the hello index that //images/hello built,
// never pulled, and the manifest a valid v1 Pod again.
func TestHelloPod(t *testing.T) {
	digest, err := os.ReadFile(runfile.Path(t, "HELLO_INDEX_DIGEST"))
	if err != nil {
		t.Fatal(err)
	}
	want := "docker.io/library/hello@" + strings.TrimSpace(string(digest))
	if !strings.HasPrefix(want, "docker.io/library/hello@sha256:") {
		t.Fatalf("the index digest file holds %q", digest)
	}
	podFile := runfile.Path(t, "HELLO_POD")
	data, err := os.ReadFile(podFile)
	if err != nil {
		t.Fatal(err)
	}
	pod, err := staticpod.Parse(podFile, data)
	if err != nil {
		t.Fatalf("the rule's output does not parse back: %v", err)
	}
	if len(pod.Spec.Containers) != 1 || len(pod.Spec.InitContainers) != 0 {
		t.Fatalf("hello pod has %d containers and %d init containers, want 1 and 0", len(pod.Spec.Containers), len(pod.Spec.InitContainers))
	}
	c := pod.Spec.Containers[0]
	if c.Image != want {
		t.Errorf("hello runs %q, want %q", c.Image, want)
	}
	if c.ImagePullPolicy != corev1.PullNever {
		t.Errorf("hello has imagePullPolicy %q, want Never", c.ImagePullPolicy)
	}
	if pod.Name != "hello" || pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("pod %q with restartPolicy %q, want hello with Never", pod.Name, pod.Spec.RestartPolicy)
	}
	again, err := staticpod.Encode(pod)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, data) {
		t.Errorf("the rule's output is not in the canonical encoding:\n%s\nwant\n%s", data, again)
	}

	infoData, err := os.ReadFile(runfile.Path(t, "HELLO_POD_JSON"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(infoData))
	dec.DisallowUnknownFields()
	var info staticpod.Info
	if err := dec.Decode(&info); err != nil {
		t.Fatalf("pod json %s: %v", infoData, err)
	}
	if info.Name != "hello" || info.Path != "/etc/kubernetes/manifests/hello.yaml" ||
		len(info.Images) != 1 || info.Images[0] != (staticpod.Image{Container: "hello", Image: want}) {
		t.Errorf("pod json is %s, want hello at /etc/kubernetes/manifests/hello.yaml running %s", infoData, want)
	}
}

// TestPodtoolRefusesBadInput runs the rule's tool as the rule does, with
// the real hello bundle, on each bad manifest of testdata: it must fail,
// naming the file and the reason, and write nothing.
func TestPodtoolRefusesBadInput(t *testing.T) {
	tool := runfile.Path(t, "PODTOOL")
	bundle := runfile.Path(t, "HELLO_BUNDLE")
	spec := filepath.Join(t.TempDir(), "spec.json")
	specJSON, err := json.Marshal(map[string]any{"bundles": []staticpod.Bundle{{File: bundle, Namespace: "k8s.io"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spec, specJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  string
		want []string
	}{
		{"UNKNOWN_FIELD", []string{`strict decoding error: unknown field "spec.containers[0].imagePullPolicyy"`}},
		{"UNPARSEABLE", []string{"does not parse", "yaml: line 8"}},
		{"WRONG_KIND", []string{`apiVersion "apps/v1" and kind "Deployment"`}},
		{"NOT_PRESEEDED", []string{`pod "hello"`, `image "hello:2.0" (docker.io/library/hello:2.0), which no bundle provides`,
			"the bundles provide: docker.io/library/hello:1.0, docker.io/library/hello@sha256:"}},
	} {
		t.Run(tc.env, func(t *testing.T) {
			src := runfile.Path(t, tc.env)
			out := filepath.Join(t.TempDir(), "out.yaml")
			cmd := exec.CommandContext(t.Context(), tool, "pin", "--src", src, "--name", "hello",
				"--path", "/etc/kubernetes/manifests/hello.yaml", "--spec", spec, "--out", out, "--info", out+".json")
			stderr, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("podtool: %v, want exit status 1; output:\n%s", err, stderr)
			}
			t.Logf("podtool: %s", stderr)
			for _, w := range append([]string{src}, tc.want...) {
				if !strings.Contains(string(stderr), w) {
					t.Errorf("podtool's error does not contain %q", w)
				}
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("podtool wrote %s for bad input (stat: %v)", out, err)
			}
		})
	}
}

// TestProductionPods reads the production appliance's pods tar
// (//images:pods, which the initramfs merges): the kubelet's directory, and
// in it exactly hello and hello-web, byte for byte what static_pod wrote;
// the listing names both with the images they run.
func TestProductionPods(t *testing.T) {
	f, err := os.Open(runfile.Path(t, "PROD_PODS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string][]byte{}
	var names []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if got[h.Name], err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
	}
	// Sorted by pod name.
	want := "etc/ etc/kubernetes/ etc/kubernetes/manifests/ etc/kubernetes/manifests/hello.yaml etc/kubernetes/manifests/hello-web.yaml"
	if strings.Join(names, " ") != want {
		t.Fatalf("pods tar entries %q, want %q", strings.Join(names, " "), want)
	}
	for name, env := range map[string]string{"hello": "HELLO_PROD_POD", "hello-web": "HELLO_WEB_PROD_POD"} {
		pinned, err := os.ReadFile(runfile.Path(t, env))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got["etc/kubernetes/manifests/"+name+".yaml"], pinned) {
			t.Errorf("the appliance's %s.yaml is not static_pod's output", name)
		}
		pod, err := staticpod.Parse(name, pinned)
		if err != nil {
			t.Fatal(err)
		}
		if name == "hello-web" && (!pod.Spec.HostNetwork || pod.Spec.RestartPolicy != corev1.RestartPolicyAlways ||
			len(pod.Spec.Containers) != 1 || pod.Spec.Containers[0].Ports[0].ContainerPort != 8080) {
			t.Errorf("hello-web: hostNetwork %v, restartPolicy %s, want true, Always and port 8080", pod.Spec.HostNetwork, pod.Spec.RestartPolicy)
		}
		if name == "hello" && pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("hello: restartPolicy %s, want Never", pod.Spec.RestartPolicy)
		}
	}
	data, err := os.ReadFile(runfile.Path(t, "PROD_PODS_JSON"))
	if err != nil {
		t.Fatal(err)
	}
	var l staticpod.Pods
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		t.Fatal(err)
	}
	if len(l.Pods) != 2 || l.Pods[0].Name != "hello" || l.Pods[1].Name != "hello-web" ||
		!strings.HasPrefix(l.Pods[1].Images[0].Image, "localhost/appliance/hello-web@sha256:") {
		t.Errorf("pods listing:\n%s", data)
	}
}

// TestPodtoolTreeRefuses runs `podtool tree` as static_pods does: the hello
// pod against a preseed manifest without the hello bundle, and two pods of
// one name, must fail naming the pod, the image and the manifest, and write
// no tar.
func TestPodtoolTreeRefuses(t *testing.T) {
	tool := runfile.Path(t, "PODTOOL")
	hello := runfile.Path(t, "HELLO_POD")
	manifest := runfile.Path(t, "PAUSE_ONLY_JSON")
	digest, err := os.ReadFile(runfile.Path(t, "HELLO_INDEX_DIGEST"))
	if err != nil {
		t.Fatal(err)
	}
	image := "docker.io/library/hello@" + strings.TrimSpace(string(digest))
	pod := staticpod.TreePod{Name: "hello", File: hello}
	for _, tc := range []struct {
		name string
		pods []staticpod.TreePod
		want []string
	}{
		{"not preseeded", []staticpod.TreePod{pod}, []string{`pod "hello"`, hello, "image " + image + " is not preseeded", manifest}},
		{"same name", []staticpod.TreePod{pod, pod}, []string{hello, `both name a pod "hello"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			spec, err := json.Marshal(map[string]any{"pods": tc.pods})
			if err != nil {
				t.Fatal(err)
			}
			specFile := filepath.Join(dir, "spec.json")
			if err := os.WriteFile(specFile, spec, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "pods.tar")
			cmd := exec.CommandContext(t.Context(), tool, "tree", "--spec", specFile, "--preseed_manifest", manifest,
				"--out", out, "--pods_json", out+".json")
			stderr, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("podtool tree: %v, want exit status 1; output:\n%s", err, stderr)
			}
			t.Logf("podtool tree: %s", stderr)
			for _, w := range tc.want {
				if !strings.Contains(string(stderr), w) {
					t.Errorf("podtool's error does not contain %q", w)
				}
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("podtool left %d files in %s, want only the spec", len(entries), dir)
			}
		})
	}
}
