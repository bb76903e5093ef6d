package pull_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/appliance-bundler/appliance/build/oci/bundle/layouttest"
	"github.com/appliance-bundler/appliance/build/oci/pull"
	"github.com/appliance-bundler/appliance/build/oci/pull/registrytest"
	"github.com/appliance-bundler/appliance/build/oci/validate"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

var testPlatforms = []v1.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64", Variant: "v8"},
	{OS: "linux", Architecture: "arm", Variant: "v7"},
}

// pushIndex pushes an index of a random image per testPlatforms as ref.
func pushIndex(t *testing.T, reg *registrytest.Registry, ref string) (name.Tag, v1.ImageIndex) {
	t.Helper()
	idx := layouttest.RandomIndex(t, testPlatforms...)
	return reg.PushIndex(t, ref, idx), idx
}

// pushApp pushes a random image as library/app:1.0 and returns it with the
// request that fetches it by digest.
func pushApp(t *testing.T, reg *registrytest.Registry) (v1.Image, pull.Request) {
	t.Helper()
	img := layouttest.RandomImage(t, testPlatforms[0])
	tag := reg.Push(t, "library/app:1.0", img)
	return img, pull.Request{Image: tag.Context().Name(), Digest: registrytest.Digest(t, img)}
}

func TestFetchGoodPull(t *testing.T) {
	for _, mode := range []string{registrytest.Anonymous, registrytest.Basic, registrytest.Bearer} {
		t.Run(mode, func(t *testing.T) {
			reg := registrytest.New(t, mode)
			img, req := pushApp(t, reg)
			dest := filepath.Join(t.TempDir(), "layout")
			if err := pull.Fetch(context.Background(), req, dest, registrytest.Creds()); err != nil {
				t.Fatalf("pull failed: %v", err)
			}
			res, err := validate.Layout(dest)
			if err != nil {
				t.Fatalf("pulled layout is invalid: %v", err)
			}
			if len(res.Index) != 1 || res.Index[0].Digest != req.Digest {
				t.Fatalf("layout index names %+v, want only %s", res.Index, req.Digest)
			}
			layers, _ := img.Layers()
			for _, l := range layers {
				d := registrytest.Digest(t, l)
				if _, ok := res.Blobs[d]; !ok {
					t.Errorf("layer %s missing from the pulled layout", d)
				}
			}
			if mode == registrytest.Bearer && reg.Tokens() == 0 {
				t.Error("no token was requested: the bearer flow was not exercised")
			}
		})
	}
}

func TestFetchWrongCredentialsRefused(t *testing.T) {
	for _, mode := range []string{registrytest.Basic, registrytest.Bearer} {
		t.Run(mode, func(t *testing.T) {
			reg := registrytest.New(t, mode)
			_, req := pushApp(t, reg)
			err := pull.Fetch(context.Background(), req, t.TempDir(), remote.WithAuth(&authn.Basic{Username: registrytest.User, Password: "wrong"}))
			if err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") && !strings.Contains(err.Error(), "401") {
				t.Fatalf("want an authentication error, got %v", err)
			}
		})
	}
}

func TestFetchRefusesTamperedLayer(t *testing.T) {
	reg := registrytest.New(t, registrytest.Bearer)
	img, req := pushApp(t, reg)
	layers, _ := img.Layers()
	bad := registrytest.Digest(t, layers[1])
	reg.Tamper(bad)
	dest := filepath.Join(t.TempDir(), "layout")
	err := pull.Fetch(context.Background(), req, dest, registrytest.Creds())
	if err == nil {
		t.Fatal("pull of an image with a corrupted layer succeeded")
	}
	t.Logf("refused: %v", err)
	for _, want := range []string{bad, req.Image, "does not match its digest"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dest, "blobs", "sha256", strings.TrimPrefix(bad, "sha256:"))); err == nil {
		t.Error("the corrupted blob was kept in the layout")
	}
}

func TestFetchRefusesTamperedConfig(t *testing.T) {
	reg := registrytest.New(t, registrytest.Basic)
	img, req := pushApp(t, reg)
	m, _ := img.Manifest()
	reg.Tamper(m.Config.Digest.String())
	err := pull.Fetch(context.Background(), req, t.TempDir(), registrytest.Creds())
	if err == nil || !strings.Contains(err.Error(), m.Config.Digest.String()) {
		t.Fatalf("want an error naming config blob %s, got %v", m.Config.Digest, err)
	}
}

func TestFetchRefusesManifestNotMatchingDigest(t *testing.T) {
	reg := registrytest.New(t, registrytest.Bearer)
	img := layouttest.RandomImage(t, testPlatforms[0])
	tag := reg.Push(t, "library/app:1.0", img)
	// The pinned digest is another image's: the registry serves, under
	// that digest, a manifest whose bytes do not hash to it.
	other := registrytest.Digest(t, layouttest.RandomImage(t, testPlatforms[0]))
	raw, _ := img.RawManifest()
	reg.ServeManifest(tag.Context().RepositoryStr(), other, types.OCIManifestSchema1, raw)
	req := pull.Request{Image: tag.Context().Name(), Digest: other}
	err := pull.Fetch(context.Background(), req, t.TempDir(), registrytest.Creds())
	if err == nil || !strings.Contains(err.Error(), other) {
		t.Fatalf("want an error naming digest %s, got %v", other, err)
	}
	t.Logf("refused: %v", err)
}

func TestFetchRefusesMissingBlob(t *testing.T) {
	reg := registrytest.New(t, registrytest.Bearer)
	img := layouttest.RandomImage(t, testPlatforms[0])
	tag, err := name.NewTag(reg.Host() + "/library/partial:1.0")
	if err != nil {
		t.Fatal(err)
	}
	// Upload the config but no layer, then the manifest: the registry
	// holds a manifest whose layers it does not have.
	rawCfg, _ := img.RawConfigFile()
	if err := remote.WriteLayer(tag.Context(), static.NewLayer(rawCfg, types.OCIConfigJSON), registrytest.Creds()); err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(tag, img, registrytest.Creds()); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	missing := registrytest.Digest(t, layers[0])
	req := pull.Request{Image: tag.Context().Name(), Digest: registrytest.Digest(t, img)}
	err = pull.Fetch(context.Background(), req, t.TempDir(), registrytest.Creds())
	if err == nil {
		t.Fatal("pull of an image with a missing blob succeeded")
	}
	t.Logf("refused: %v", err)
	for _, want := range []string{missing, tag.Context().Name(), "missing blob"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestFetchRefusesTagOnly(t *testing.T) {
	reg := registrytest.New(t, registrytest.Anonymous)
	tag := reg.Push(t, "library/app:1.0", layouttest.RandomImage(t, testPlatforms[0]))
	for _, image := range []string{tag.String(), tag.Context().Name()} {
		err := pull.Fetch(context.Background(), pull.Request{Image: image}, t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "no digest") || !strings.Contains(err.Error(), "update_lock") {
			t.Errorf("pull of %s without digest: want a refusal saying how to pin, got %v", image, err)
		}
		t.Logf("refused: %v", err)
	}
	err := pull.Fetch(context.Background(), pull.Request{Image: tag.String() + "@sha256:" + strings.Repeat("0", 64)}, t.TempDir())
	if err == nil {
		t.Error("a digest inside the image name was accepted")
	}
}

func TestFetchNarrowsIndex(t *testing.T) {
	reg := registrytest.New(t, registrytest.Bearer)
	tag, idx := pushIndex(t, reg, "library/multi:1.0")
	im, _ := idx.IndexManifest()
	dest := filepath.Join(t.TempDir(), "layout")
	req := pull.Request{Image: tag.Context().Name(), Digest: registrytest.Digest(t, idx), Platforms: []string{"linux/arm64"}}
	if err := pull.Fetch(context.Background(), req, dest, registrytest.Creds()); err != nil {
		t.Fatalf("pull failed: %v", err)
	}
	checkNarrowed(t, dest, req.Digest, im, "linux/arm64/v8")
	// Two platforms, and the whole index.
	dest2 := filepath.Join(t.TempDir(), "two")
	req.Platforms = []string{"linux/amd64", "linux/arm/v7"}
	if err := pull.Fetch(context.Background(), req, dest2, registrytest.Creds()); err != nil {
		t.Fatal(err)
	}
	checkNarrowed(t, dest2, req.Digest, im, "linux/amd64", "linux/arm/v7")
	dest3 := filepath.Join(t.TempDir(), "all")
	req.Platforms = nil
	if err := pull.Fetch(context.Background(), req, dest3, registrytest.Creds()); err != nil {
		t.Fatal(err)
	}
	if res, err := validate.Layout(dest3); err != nil || len(res.Manifests) != 3 || res.Index[0].Digest != req.Digest {
		t.Fatalf("want the whole index with 3 manifests, got %+v, %v", res, err)
	}

	req.Platforms = []string{"linux/s390x"}
	err := pull.Fetch(context.Background(), req, t.TempDir(), registrytest.Creds())
	if err == nil || !strings.Contains(err.Error(), "linux/s390x") {
		t.Fatalf("want an error naming the missing platform, got %v", err)
	}
}

// checkNarrowed checks a layout narrowed to platforms: index.json names the
// original index (the pinned digest, the registry's bytes unchanged) with
// AnnotationPlatforms listing them, and the layout holds exactly the index
// blob and the kept platforms' manifests, configs and layers.
func checkNarrowed(t *testing.T, dest, pinned string, im *v1.IndexManifest, platforms ...string) {
	t.Helper()
	if _, err := validate.Layout(dest); err != nil {
		t.Fatalf("narrowed layout is invalid: %v", err)
	}
	var idx v1.IndexManifest
	data, err := os.ReadFile(filepath.Join(dest, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest.String() != pinned || !idx.Manifests[0].MediaType.IsIndex() {
		t.Fatalf("index.json names %+v, want only the pinned index %s", idx.Manifests, pinned)
	}
	d := idx.Manifests[0]
	if got, want := d.Annotations[bundleformat.AnnotationPlatforms], strings.Join(platforms, ","); got != want {
		t.Errorf("annotation %s = %q, want %q", bundleformat.AnnotationPlatforms, got, want)
	}
	if got := d.Annotations["org.opencontainers.image.base.digest"]; got != pinned {
		t.Errorf("base.digest annotation %q, want %s", got, pinned)
	}
	raw, err := os.ReadFile(filepath.Join(dest, "blobs", "sha256", d.Digest.Hex))
	if err != nil || v1.Hash(d.Digest).String() != pinned || int64(len(raw)) != d.Size {
		t.Fatalf("index blob: %v (size %d, descriptor %d)", err, len(raw), d.Size)
	}
	want := map[string]bool{d.Digest.Hex: true}
	for _, m := range im.Manifests {
		if !slices.Contains(platforms, m.Platform.String()) {
			continue
		}
		want[m.Digest.Hex] = true
		var mf v1.Manifest
		mdata, err := os.ReadFile(filepath.Join(dest, "blobs", "sha256", m.Digest.Hex))
		if err != nil {
			t.Fatalf("manifest %s of kept platform %s: %v", m.Digest, m.Platform, err)
		}
		if err := json.Unmarshal(mdata, &mf); err != nil {
			t.Fatal(err)
		}
		want[mf.Config.Digest.Hex] = true
		for _, l := range mf.Layers {
			want[l.Digest.Hex] = true
		}
	}
	ents, err := os.ReadDir(filepath.Join(dest, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
		if !want[e.Name()] {
			t.Errorf("layout holds blob %s, which no kept platform needs", e.Name())
		}
	}
	if len(got) != len(want) {
		t.Errorf("layout holds %d blobs, want %d (index, and manifest, config and layers of %v)", len(got), len(want), platforms)
	}
}
