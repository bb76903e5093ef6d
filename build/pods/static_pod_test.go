// Package pods_test checks the static_pod rule as a build uses it: its
// outputs for the hello pod and its tool's errors on bad manifests.
package pods_test

import (
	"bytes"
	"encoding/json"
	"errors"
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
			cmd := exec.CommandContext(t.Context(), tool, "--src", src, "--name", "hello",
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
