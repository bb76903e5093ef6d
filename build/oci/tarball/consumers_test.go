package tarball_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/imagebuild"
	"github.com/appliance-bundler/appliance/build/oci/validate"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// TestConsumers hands the layouts to what oci_image (a base) and
// preseed_bundle run: a docker-save image and an index narrowed by
// `ctr export --platform`, which keeps its digest in the bundle.
func TestConsumers(t *testing.T) {
	ii, imgs := index(t)
	idx, _ := ii.Digest()
	narrowed := ctrExport(t, ii, "docker.io/library/multi:1.0", archive.WithPlatform(platforms.OnlyStrict(platforms.MustParse("linux/amd64"))))
	saved := dockerSave(t, map[string]v1.Image{"busybox:1.36": imgs["linux/amd64"]})
	amd64, _ := imgs["linux/amd64"].Digest()
	for what, c := range map[string]struct {
		data   []byte
		target string
	}{
		"narrowed index": {narrowed, idx.String()},
		"docker save":    {saved, ""},
	} {
		t.Run(what, func(t *testing.T) {
			dir, res := mustLoad(t, c.data, "")
			if c.target != "" && res.Digest.String() != c.target {
				t.Fatalf("digest %s, want %s", res.Digest, c.target)
			}
			// preseed_bundle.
			p := filepath.Join(t.TempDir(), "bundle.tar")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := bundle.Write(f, dir, "docker.io/library/x:1", bundleformat.None); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			br, err := validate.Bundle(p, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if br.Index[0].Digest != res.Digest.String() {
				t.Errorf("bundle target %s, want %s", br.Index[0].Digest, res.Digest)
			}
			if c.target != "" && !slices.Contains(br.Manifests, amd64.String()) {
				t.Errorf("bundle manifests %v lack the amd64 one %s", br.Manifests, amd64)
			}
			// oci_image's base.
			img, err := imagebuild.Build(imagebuild.Spec{Base: dir, OS: "linux", Architecture: "amd64", Env: map[string]string{"A": "b"}})
			if err != nil {
				t.Fatal(err)
			}
			got, _ := img.Layers()
			want, _ := imgs["linux/amd64"].Layers()
			if len(got) != len(want) {
				t.Errorf("image on the layout has %d layers, want the base's %d", len(got), len(want))
			}
		})
	}
}
