// Package tarball checks, on Bazel-built targets, that oci_from_tarball
// reads a docker-save tarball written by go-containerregistry's writer (not
// the project's code), that oci_image builds on its output in the sandbox
// and that preseed_bundle bundles it: each result against the image-layout
// spec and the bundle format, and the digests against an independent
// reading of the tarball. It must not depend on anything but its runfiles.
package tarball

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/appliance-bundler/appliance/build/oci/imagebuild"
	"github.com/appliance-bundler/appliance/build/oci/validate"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

const reference = "docker.io/library/hello-tarball:1.0"

// checkLayout validates the layout in env and returns its image, after
// checking that index.json and the digest file in env+"_DIGEST" agree.
func checkLayout(t *testing.T, env string) (string, v1.Image) {
	t.Helper()
	dir := runfile.Path(t, env)
	res, err := validate.Layout(dir)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(runfile.Path(t, env+"_DIGEST"))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSpace(string(data))
	if len(res.Index) != 1 || res.Index[0].Digest != want || len(res.Manifests) != 1 || res.Manifests[0] != want {
		t.Fatalf("%s: index.json names %+v (manifests %v), its digest file says %s", env, res.Index, res.Manifests, want)
	}
	// Runfiles are symlinks, which go-containerregistry's layout reader
	// refuses; imagebuild's reader (oci_image's) follows them.
	img, err := imagebuild.LoadImage(dir, "linux", "amd64", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := img.Digest(); err != nil || got.String() != want {
		t.Fatalf("%s: the image read is %s (%v), want %s", env, got, err, want)
	}
	return want, img
}

func digests(t *testing.T, img v1.Image) (config v1.Hash, layers, diffIDs []v1.Hash) {
	t.Helper()
	config, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		id, err := l.DiffID()
		if err != nil {
			t.Fatal(err)
		}
		layers, diffIDs = append(layers, d), append(diffIDs, id)
	}
	return config, layers, diffIDs
}

// TestFromTarball compares the layout with go-containerregistry's own
// reading of the tarball: the same config and layers, byte for byte.
func TestFromTarball(t *testing.T) {
	dg, img := checkLayout(t, "IMAGE")
	src, err := tarball.ImageFromPath(runfile.Path(t, "DOCKER_SAVE"), nil)
	if err != nil {
		t.Fatal(err)
	}
	gc, gl, gd := digests(t, img)
	wc, wl, wd := digests(t, src)
	if gc != wc || len(gl) != 1 || gl[0] != wl[0] || gd[0] != wd[0] {
		t.Fatalf("layout has config %s layers %v (diff_ids %v); the tarball has %s %v (%v)", gc, gl, gd, wc, wl, wd)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/hello-tarball" {
		t.Errorf("config %+v, want linux/amd64 running /hello-tarball", cf)
	}
	t.Logf("image from the tarball: manifest %s, config (image ID) %s, layer %s", dg, gc, gl[0])

	// The zstd-compressed tarball, read without a selector, gives the same
	// image and the same index.json.
	zdg, _ := checkLayout(t, "IMAGE_ZSTD")
	if zdg != dg {
		t.Errorf("from the zstd tarball: %s, from the plain one: %s", zdg, dg)
	}
	a, _ := os.ReadFile(filepath.Join(runfile.Path(t, "IMAGE"), "index.json"))
	b, _ := os.ReadFile(filepath.Join(runfile.Path(t, "IMAGE_ZSTD"), "index.json"))
	if !bytes.Equal(a, b) {
		t.Errorf("index.json differs:\n%s\n%s", a, b)
	}
}

// TestImageOnTarball checks oci_image on the tarball's image as base: the
// base's layer first, then the new one, and the base's config kept.
func TestImageOnTarball(t *testing.T) {
	_, base := checkLayout(t, "IMAGE")
	dg, img := checkLayout(t, "ON_TARBALL")
	_, bl, bd := digests(t, base)
	_, gl, gd := digests(t, img)
	if len(gl) != 2 || gl[0] != bl[0] || gd[0] != bd[0] {
		t.Fatalf("layers %v (diff_ids %v), want the base's %v first and one more", gl, gd, bl)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.Entrypoint[0] != "/hello-tarball" || !slices.Contains(cf.Config.Env, "GREETING=/etc/greeting") {
		t.Errorf("config %+v: want the base's entrypoint and GREETING", cf.Config)
	}
	t.Logf("oci_image on the tarball's image: %s", dg)
}

// TestBundle checks the preseed bundle against the bundle format: it names
// the image by its reference, with the digest of the image from the
// tarball.
func TestBundle(t *testing.T) {
	dg, _ := checkLayout(t, "IMAGE")
	p := runfile.Path(t, "BUNDLE")
	res, err := validate.Bundle(p, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if res.Reference != reference || len(res.Index) != 1 || res.Index[0].Digest != dg {
		t.Fatalf("bundle names %q → %+v, want %s → %s", res.Reference, res.Index, reference, dg)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bundle %s: %d bytes, %s → %s", filepath.Base(p), st.Size(), reference, dg)
}
