package imagebuild_test

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/build/oci/bundle/layouttest"
	"github.com/appliance-bundler/appliance/build/oci/imagebuild"
	"github.com/appliance-bundler/appliance/build/oci/validate"
	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// symlinkTree mirrors dir with every file a symlink to the original, as
// Bazel stages a tree artifact in the sandbox.
func symlinkTree(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "staged")
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(out, rel), 0o755)
		}
		return os.Symlink(p, filepath.Join(out, rel))
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBuildOnSymlinkedBase: a base staged as Bazel stages a tree artifact
// (every file a symlink) is read, and its layers come first.
func TestBuildOnSymlinkedBase(t *testing.T) {
	baseDir := layouttest.Single(t, "linux/amd64", "content of base")
	top := layouttest.Single(t, "linux/amd64", "content of top")
	topImg, err := imagebuild.LoadImage(top, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	topLayers, err := topImg.Layers()
	if err != nil {
		t.Fatal(err)
	}
	baseImg, err := imagebuild.LoadImage(baseDir, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	bm, err := baseImg.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	// The layer tar of "top" again, as the new layer.
	tarPath := filepath.Join(t.TempDir(), "top.tar")
	rc, err := topLayers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tarPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := imagebuild.Build(imagebuild.Spec{Base: symlinkTree(t, baseDir), Layers: []string{tarPath}})
	if err != nil {
		t.Fatalf("building on a symlinked base: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "out")
	if _, err := imagebuild.WriteLayout(dir, img); err != nil {
		t.Fatal(err)
	}
	if _, err := validate.Layout(dir); err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := topImg.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 2 || m.Layers[0].Digest != bm.Layers[0].Digest || m.Layers[1].Digest != tm.Layers[0].Digest {
		t.Fatalf("layers %+v, want the base's %s then %s", m.Layers, bm.Layers[0].Digest, tm.Layers[0].Digest)
	}
}

func TestSymlinkedBlobMustMatchDigest(t *testing.T) {
	staged := symlinkTree(t, layouttest.Single(t, "linux/amd64", "content of base"))
	img, err := imagebuild.LoadImage(staged, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	// Point the layer's link at other bytes of the same size.
	layer := filepath.Join(staged, "blobs", "sha256", m.Layers[0].Digest.Hex)
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, make([]byte, m.Layers[0].Size), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(layer); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, layer); err != nil {
		t.Fatal(err)
	}
	img, err = imagebuild.Build(imagebuild.Spec{Base: staged})
	if err == nil {
		_, err = imagebuild.WriteLayout(filepath.Join(t.TempDir(), "out"), img)
	}
	if err == nil || !strings.Contains(err.Error(), "has content digest") || !strings.Contains(err.Error(), m.Layers[0].Digest.String()) {
		t.Fatalf("want a digest mismatch naming %s, got %v", m.Layers[0].Digest, err)
	}
}

func TestWriteIndexAndPick(t *testing.T) {
	amd := symlinkTree(t, layouttest.Single(t, "linux/amd64", "content of a"))
	arm := symlinkTree(t, layouttest.Single(t, "linux/arm64", "content of b"))
	out := filepath.Join(t.TempDir(), "index")
	h, err := imagebuild.WriteIndex("//x:index", out, []string{amd, arm})
	if err != nil {
		t.Fatal(err)
	}
	res, err := validate.Layout(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Index) != 1 || res.Index[0].Digest != h.String() || res.Index[0].MediaType != bundleformat.MediaTypeOCIIndex || len(res.Manifests) != 2 {
		t.Fatalf("want index.json naming index %s of 2 manifests, got %+v", h, res)
	}
	again := filepath.Join(t.TempDir(), "index")
	if h2, err := imagebuild.WriteIndex("//x:index", again, []string{amd, arm}); err != nil || h2 != h {
		t.Fatalf("index written again: %s, %v; first %s", h2, err, h)
	}
	img, err := imagebuild.LoadImage(symlinkTree(t, out), "linux", "arm64", "")
	if err != nil {
		t.Fatal(err)
	}
	if cf, err := img.ConfigFile(); err != nil || cf.Architecture != "arm64" {
		t.Fatalf("picked %+v, %v; want arm64", cf, err)
	}
	if _, err := imagebuild.LoadImage(out, "linux", "s390x", ""); err == nil || !strings.Contains(err.Error(), "no manifest for linux/s390x (it holds linux/amd64, linux/arm64)") {
		t.Fatalf("want an error naming the missing platform, got %v", err)
	}
}

func TestWriteIndexRefuses(t *testing.T) {
	amd := layouttest.Single(t, "linux/amd64", "content of a")
	amd2 := layouttest.Single(t, "linux/amd64", "content of b")
	_, err := imagebuild.WriteIndex("//x:dup", filepath.Join(t.TempDir(), "o"), []string{amd, amd2})
	if err == nil || !strings.Contains(err.Error(), "oci_image_index //x:dup: images "+amd+" and "+amd2+" are both for platform linux/amd64") {
		t.Fatalf("two amd64 images: got %v", err)
	}
	idx := filepath.Join(t.TempDir(), "idx")
	if _, err := imagebuild.WriteIndex("//x:idx", idx, []string{amd}); err != nil {
		t.Fatal(err)
	}
	_, err = imagebuild.WriteIndex("//x:nested", filepath.Join(t.TempDir(), "o"), []string{idx})
	if err == nil || !strings.Contains(err.Error(), "oci_image_index //x:nested: image "+idx+" must be an OCI layout of exactly one image manifest") {
		t.Fatalf("an index as input: got %v", err)
	}
}

// TestPickFromNarrowedIndex: a layout of an index narrowed to linux/amd64
// (AnnotationPlatforms, the arm64 manifest absent) gives its amd64 image and
// says which platforms it holds when asked for arm64.
func TestPickFromNarrowedIndex(t *testing.T) {
	out := filepath.Join(t.TempDir(), "index")
	if _, err := imagebuild.WriteIndex("//x:index", out, []string{layouttest.Single(t, "linux/amd64", "content of a"), layouttest.Single(t, "linux/arm64", "content of b")}); err != nil {
		t.Fatal(err)
	}
	// As the fetcher writes a pull narrowed to amd64: the arm64 manifest is absent.
	layouttest.Narrow(t, out, "linux/amd64")
	img, err := imagebuild.LoadImage(out, "linux", "arm64", "")
	if err == nil || !strings.Contains(err.Error(), "holds no manifest for linux/arm64 (it holds linux/amd64)") {
		t.Fatalf("arm64 from an index narrowed to amd64: got %v, %v", img, err)
	}
	img, err = imagebuild.LoadImage(out, "linux", "amd64", "")
	if err != nil {
		t.Fatal(err)
	}
	if cf, err := img.ConfigFile(); err != nil || cf.Architecture != "amd64" {
		t.Fatalf("picked %+v, %v; want amd64", cf, err)
	}
}

// Without os and architecture, a base's platform is chosen as rules_oci
// does: the only one a (narrowed) index holds, else the target platform's;
// with neither, the error names every platform held.
func TestPickWithoutPlatform(t *testing.T) {
	two := filepath.Join(t.TempDir(), "index")
	if _, err := imagebuild.WriteIndex("//x:index", two, []string{layouttest.Single(t, "linux/amd64", "content of a"), layouttest.Single(t, "linux/arm64", "content of b")}); err != nil {
		t.Fatal(err)
	}
	narrowed := filepath.Join(t.TempDir(), "narrowed")
	if err := os.CopyFS(narrowed, os.DirFS(two)); err != nil {
		t.Fatal(err)
	}
	layouttest.Narrow(t, narrowed, "linux/amd64")
	arch := func(img v1.Image, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		return cf.Architecture
	}
	if got := arch(imagebuild.LoadImage(narrowed, "", "", "")); got != "amd64" {
		t.Errorf("the one platform of a narrowed index: got %s, want amd64", got)
	}
	arm := ocispec.Platform{OS: "linux", Architecture: "arm64"}
	if got := arch(imagebuild.LoadImageFor(two, ocispec.Platform{}, arm)); got != "arm64" {
		t.Errorf("two platforms, target linux/arm64: got %s", got)
	}
	if _, err := imagebuild.LoadImage(two, "", "", ""); err == nil || !strings.Contains(err.Error(), "holds platforms linux/amd64, linux/arm64; set os and architecture") {
		t.Errorf("two platforms, no target: got %v, want an error naming both", err)
	}
	s390x := ocispec.Platform{OS: "linux", Architecture: "s390x"}
	if _, err := imagebuild.LoadImageFor(two, ocispec.Platform{}, s390x); err == nil || !strings.Contains(err.Error(), "holds platforms linux/amd64, linux/arm64, none of them the target platform linux/s390x") {
		t.Errorf("two platforms, target s390x: got %v, want an error naming both and the target", err)
	}
}
