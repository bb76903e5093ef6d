// Package image_test checks oci_image built by Bazel, in its sandbox,
// on bases that are themselves build outputs: an oci_image and an
// oci_image_index (Bazel stages both as trees of symlinks). Each result must
// be a valid layout holding the base's layers then the new one, with the
// base's config merged with the rule's, and the same bytes when built twice.
// It must not build images itself: what it checks is what Bazel built.
package image_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/build/oci/validate"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

type manifest struct {
	Config validate.Descriptor
	Layers []validate.Descriptor
}

type config struct {
	Architecture string
	OS           string
	Variant      string
	Config       struct {
		Env        []string
		Entrypoint []string
		User       string
		Labels     map[string]string
	}
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// image is one image manifest of a layout, decoded.
type image struct {
	digest   string
	manifest manifest
	config   config
}

func readBlob(t *testing.T, dir, digest string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:")))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("blob %s of %s: %v", digest, dir, err)
	}
}

// load validates the layout of env and returns its image for arch (the
// only one, or the one of that architecture in its index).
func load(t *testing.T, env, arch string) image {
	t.Helper()
	dir := runfile.Path(t, env)
	res, err := validate.Layout(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Index) != 1 {
		t.Fatalf("%s: index.json names %d images, want 1", env, len(res.Index))
	}
	for _, d := range res.Manifests {
		var img image
		img.digest = d
		readBlob(t, dir, d, &img.manifest)
		readBlob(t, dir, img.manifest.Config.Digest, &img.config)
		if img.config.Architecture == arch {
			return img
		}
	}
	t.Fatalf("%s: no %s image among %v", env, arch, res.Manifests)
	return image{}
}

func fileSHA(t *testing.T, env string) string {
	t.Helper()
	data, err := os.ReadFile(runfile.Path(t, env))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func TestOnBuiltBase(t *testing.T) {
	for _, c := range []struct {
		name, env, base, arch, variant, user, baseLabel string
	}{
		{"image", "ON_IMAGE", "BASE", "amd64", "", "1:1", "yes"},
		{"index", "ON_INDEX", "BASE_INDEX", "arm64", "v8", "", "arm64"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := load(t, c.env, c.arch)
			base := load(t, c.base, c.arch)
			again := load(t, c.env+"_AGAIN", c.arch)
			if img.digest != again.digest {
				t.Errorf("built twice: %s and %s", img.digest, again.digest)
			}
			layers := img.manifest.Layers
			if len(layers) != 2 || layers[0].Digest != base.manifest.Layers[0].Digest || layers[0].MediaType != base.manifest.Layers[0].MediaType {
				t.Fatalf("layers %+v, want the base's %+v first, then one", layers, base.manifest.Layers)
			}
			diffIDs := img.config.RootFS.DiffIDs
			if top := fileSHA(t, "TOP_LAYER"); len(diffIDs) != 2 || diffIDs[0] != base.config.RootFS.DiffIDs[0] || diffIDs[1] != top {
				t.Errorf("diff_ids %v, want the base's %v then the new layer's %s", diffIDs, base.config.RootFS.DiffIDs, top)
			}
			cfg := img.config
			if cfg.OS != "linux" || cfg.Architecture != c.arch || cfg.Variant != c.variant {
				t.Errorf("platform %s/%s/%s, want linux/%s/%s", cfg.OS, cfg.Architecture, cfg.Variant, c.arch, c.variant)
			}
			if want := []string{"PATH=/top:/bin"}; !slices.Equal(cfg.Config.Env, want) {
				t.Errorf("env %v, want %v (the base's PATH extended)", cfg.Config.Env, want)
			}
			if want := map[string]string{"base": c.baseLabel, "top": "yes"}; !maps.Equal(cfg.Config.Labels, want) {
				t.Errorf("labels %v, want %v", cfg.Config.Labels, want)
			}
			if !slices.Equal(cfg.Config.Entrypoint, []string{"/bin/base"}) || cfg.Config.User != c.user {
				t.Errorf("entrypoint %v user %q, want the base's [/bin/base] %q", cfg.Config.Entrypoint, cfg.Config.User, c.user)
			}
			t.Logf("%s: %s on base %s", c.name, img.digest, base.digest)
		})
	}
}
