package staticpod_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/pods/staticpod"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// preseedManifest places bundles with the project's tree writer, as
// preseed_tree does, and writes the manifest it returns.
func preseedManifest(t *testing.T, bundles ...staticpod.Bundle) string {
	t.Helper()
	var inputs []bundle.TreeInput
	for i, b := range bundles {
		inputs = append(inputs, bundle.TreeInput{Namespace: b.Namespace, Name: fmt.Sprintf("b%d", i), Compression: compressionOf(b.File), File: b.File})
	}
	data, err := bundle.WriteTree(io.Discard, inputs)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "preseed.json")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func compressionOf(file string) bundleformat.Compression {
	c, _ := bundleformat.FromFileName(file)
	return c
}

// pinnedPod builds the static pod name running images with staticpod.Build
// against bundles, as static_pod does, and writes it.
func pinnedPod(t *testing.T, name string, bundles []staticpod.Bundle, images ...string) staticpod.TreePod {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\nspec:\n  containers:\n", name)
	for i, img := range images {
		fmt.Fprintf(&b, "  - name: c%d\n    image: %s\n", i, img)
	}
	out, _, err := staticpod.Build(writePod(t, b.String()), name, bundles, staticpod.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return staticpod.TreePod{Name: name, File: p}
}

// TestWriteTreePlacesPods: pods whose images the manifest preseeds go to
// etc/kubernetes/manifests/<name>.yaml, sorted, with fixed metadata, and
// the listing names each pod's path and digests.
func TestWriteTreePlacesPods(t *testing.T) {
	f := newFixture(t)
	manifest := preseedManifest(t, f.bundles...)
	pods := []staticpod.TreePod{
		pinnedPod(t, "web", f.bundles, "web:2.0"),
		pinnedPod(t, "hello", f.bundles, "hello:1.0", "web:2.0"),
	}
	var buf bytes.Buffer
	listing, err := staticpod.WriteTree(&buf, pods, manifest)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.ModTime.Unix() != 0 || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: mtime %v, owner %d:%d, want 0", h.Name, h.ModTime, h.Uid, h.Gid)
		}
		if h.Typeflag == tar.TypeReg {
			data, _ := io.ReadAll(tr)
			want, _ := os.ReadFile(pods[map[string]int{"web": 0, "hello": 1}[strings.TrimSuffix(filepath.Base(h.Name), ".yaml")]].File)
			if !bytes.Equal(data, want) || h.Mode != 0o644 {
				t.Errorf("%s (mode %o) is not the pinned manifest", h.Name, h.Mode)
			}
		}
	}
	want := "etc/ etc/kubernetes/ etc/kubernetes/manifests/ etc/kubernetes/manifests/hello.yaml etc/kubernetes/manifests/web.yaml"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("tar entries %s, want %s", got, want)
	}
	var l staticpod.Pods
	if err := bundleformat.DecodeStrict(listing, &l); err != nil {
		t.Fatalf("listing %s: %v", listing, err)
	}
	if len(l.Pods) != 2 || l.Pods[0].Name != "hello" || l.Pods[0].Path != "/etc/kubernetes/manifests/hello.yaml" ||
		len(l.Pods[0].Images) != 2 || l.Pods[0].Images[0].Image != f.helloPinned || l.Pods[0].Images[1].Image != f.webPinned ||
		l.Pods[1].Name != "web" || l.Pods[1].Images[0] != (staticpod.Image{Container: "c0", Image: f.webPinned}) {
		t.Errorf("listing:\n%s", listing)
	}
}

// TestWriteTreeEmpty: an appliance without pods still has the kubelet's
// directory.
func TestWriteTreeEmpty(t *testing.T) {
	var buf bytes.Buffer
	listing, err := staticpod.WriteTree(&buf, nil, preseedManifest(t, newFixture(t).bundles...))
	if err != nil {
		t.Fatal(err)
	}
	if string(listing) != "{\n  \"pods\": []\n}\n" {
		t.Errorf("listing %q", listing)
	}
	h, err := tar.NewReader(bytes.NewReader(buf.Bytes())).Next()
	if err != nil || h.Name != "etc/" {
		t.Fatalf("first entry %v, %v", h, err)
	}
	if !bytes.Contains(buf.Bytes(), []byte("etc/kubernetes/manifests/")) {
		t.Error("no etc/kubernetes/manifests/ in the tar")
	}
}

// TestWriteTreeRefuses: a pod whose bundle the appliance does not preseed,
// a pod not pinned, and two pods of one name fail, naming what is wrong.
func TestWriteTreeRefuses(t *testing.T) {
	f := newFixture(t)
	webOnly := preseedManifest(t, f.bundles[1])
	hello := pinnedPod(t, "hello", f.bundles, "hello:1.0")
	unpinned := staticpod.TreePod{Name: "hello", File: writePod(t, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\nspec:\n  containers:\n  - name: c0\n    image: web:2.0\n")}
	otherHello := pinnedPod(t, "hello", f.bundles, "web:2.0")
	for _, tc := range []struct {
		name string
		pods []staticpod.TreePod
		want []string
	}{
		{"not preseeded", []staticpod.TreePod{hello}, []string{`pod "hello"`, hello.File, `container "c0"`,
			"image " + f.helloPinned + " is not preseeded", "the appliance's preseed manifest is " + webOnly}},
		{"not pinned", []staticpod.TreePod{unpinned}, []string{`pod "hello"`, unpinned.File, `image "web:2.0"`, "is not pinned"}},
		{"same name", []staticpod.TreePod{otherHello, pinnedPod(t, "web", f.bundles, "web:2.0"), otherHello},
			[]string{otherHello.File, `both name a pod "hello"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := staticpod.WriteTree(io.Discard, tc.pods, webOnly)
			if err == nil {
				t.Fatal("WriteTree succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
