package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/appliance-bundler/appliance/build/appliance/uki"
	"github.com/appliance-bundler/appliance/build/oci/bundle"
	"github.com/appliance-bundler/appliance/build/oci/bundle/layouttest"
	"github.com/appliance-bundler/appliance/build/oci/erofs"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/disklayout"
	"github.com/appliance-bundler/appliance/core/systemimage"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// preseedManifest writes real bundles (a single image and a two-platform
// index narrowed to arm64) with the project's writer, places them with
// WriteTreeCached (the single image's layer in the EROFS cache), and
// returns the preseed manifest's path and what it says.
func preseedManifest(t *testing.T) (string, *bundleformat.Manifest) {
	t.Helper()
	dir := t.TempDir()
	var inputs []bundle.TreeInput
	for _, b := range []struct {
		name, layout, ref string
		platforms         []string
	}{
		{"hello", layouttest.Single(t, "linux/amd64", "hello\n"), "hello:1.0", nil},
		{"multi", layouttest.Index(t, "linux/amd64", "linux/arm64"), "example.com/multi:2", []string{"linux/arm64"}},
	} {
		var buf bytes.Buffer
		if err := bundle.Write(&buf, b.layout, b.ref, bundleformat.Zstd, b.platforms...); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, b.name+".tar.zst")
		if err := os.WriteFile(f, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, bundle.TreeInput{Namespace: "k8s.io", Name: b.name, Compression: bundleformat.Zstd, File: f, ErofsCache: b.name == "hello"})
	}
	data, err := bundle.WriteTreeCached(context.Background(), io.Discard, inputs, erofs.TreeCache(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "preseed.json")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	pm, err := bundleformat.ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	return p, pm
}

// writePods writes a static_pods listing (staticpod.Pods' format) of
// one pod running image.
func writePods(t *testing.T, image string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pods.json")
	data := `{"pods": [{"name": "web", "path": "/etc/kubernetes/manifests/web.yaml", "images": [{"container": "web", "image": "` + image + `"}]}]}`
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// rootHash is the system image's root hash of the test's inputs.
const rootHash = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

// writeFile writes content to name in dir and returns its path.
func writeFile(t *testing.T, dir, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// testUKI assembles a UKI from the pinned stub whose command line boots
// the system of root hash root.
func testUKI(t *testing.T, dir, root string) string {
	t.Helper()
	stub, err := os.ReadFile(runfile.Path(t, "UKI_STUB"))
	if err != nil {
		t.Fatal(err)
	}
	info := systemimage.Info{RootHash: root, HashOffset: 8192, Size: 12288}
	cmdline := "console=ttyS0 " + strings.Join(info.KernelArgs(), " ")
	efi, err := uki.Assemble(stub, []uki.Section{{Name: ".cmdline", Data: []byte(cmdline)}, {Name: ".linux", Data: []byte("kernel")}})
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, "uki.efi", efi)
}

// testInputs are small real inputs of a release: a UKI, a disk of 1 MiB
// and some bytes with its layout, and the system image's info, all of the
// system rootHash; preseed and pods as given.
func testInputs(t *testing.T, preseed, pods string) inputs {
	t.Helper()
	dir := t.TempDir()
	guid, err := systemimage.PartitionGUID(rootHash)
	if err != nil {
		t.Fatal(err)
	}
	disk := append(bytes.Repeat([]byte("disk "), 1000), make([]byte, 1<<20)...)
	layout, err := json.Marshal(disklayout.Layout{DiskGUID: disklayout.GUID(rootHash, "disk"), Size: int64(len(disk)), SystemRootHash: rootHash,
		Partitions: []disklayout.Partition{{Name: disklayout.SystemA, Type: "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", GUID: guid, Offset: 4096, Size: 12288}}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := json.Marshal(systemimage.Info{RootHash: rootHash, HashOffset: 8192, Size: 12288})
	if err != nil {
		t.Fatal(err)
	}
	return inputs{
		uki: testUKI(t, dir, rootHash), disk: writeFile(t, dir, "disk.raw", disk),
		diskLayout: writeFile(t, dir, "disk.layout.json", layout), systemInfo: writeFile(t, dir, "system.json", info),
		init: goBinary(t), preseed: preseed, pods: pods,
		kernelLock: writeFile(t, dir, "kernel.lock.json", []byte(`{"packages": {"linux-image": {"package": "linux-image-amd64", "version": "6.1", "sha256": "00"}}}`)),
	}
}

// release runs mkrelease on in and returns the archive's files by name.
func release(t *testing.T, in inputs) map[string][]byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "release.tar")
	if err := run(in, "", "1.2.3", out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got[strings.TrimPrefix(hdr.Name, "appliance-1.2.3/")] = b
	}
}

// The release manifest lists each preseeded image's target digest, the
// platforms a narrowed index holds and the references a pod may use, as
// the preseed manifest has them; SHA256SUMS covers the manifest.
func TestReleaseManifestReferences(t *testing.T) {
	preseed, pm := preseedManifest(t)
	pinned := "example.com/multi@" + pm.Bundles[1].Target.Digest.String()
	pods := writePods(t, pinned)
	files := release(t, testInputs(t, preseed, pods))
	var m Manifest
	if err := bundleformat.DecodeStrict(files["manifest.json"], &m); err != nil {
		t.Fatalf("manifest.json: %v\n%s", err, files["manifest.json"])
	}
	if len(m.Images) != 2 {
		t.Fatalf("images: %+v", m.Images)
	}
	for i, img := range m.Images {
		b := pm.Bundles[i]
		if img.Reference != b.Reference || img.TargetDigest != b.Target.Digest.String() || !slices.Equal(img.References, b.References) {
			t.Errorf("image %s: reference %s, target %s, references %q; the preseed manifest has %s, %s, %q",
				img.Name, img.Reference, img.TargetDigest, img.References, b.Reference, b.Target.Digest, b.References)
		}
	}
	multi := m.Images[1]
	repo := "example.com/multi"
	want := []string{repo + ":2", repo + "@" + multi.TargetDigest, repo + "@" + multi.ManifestDigests[0]}
	if multi.Name != "multi" || !slices.Equal(multi.Platforms, []string{"linux/arm64"}) || len(multi.ManifestDigests) != 1 || !slices.Equal(multi.References, want) {
		t.Errorf("narrowed index: %+v, want platforms [linux/arm64] and references %q", multi, want)
	}
	if hello := m.Images[0]; hello.Platforms != nil || len(hello.References) != 2 || hello.TargetDigest != hello.ManifestDigests[0] {
		t.Errorf("single image: %+v, want no platforms and its tag and digest", hello)
	}
	hl := pm.Bundles[0].CachedLayers
	if len(hl) != 1 || len(m.ErofsCache) != 1 || m.ErofsCache[0] != (CacheBlob{DiffID: hl[0].DiffID.String(), Path: hl[0].Path, Size: hl[0].Size, RootHash: hl[0].RootHash}) {
		t.Errorf("erofs_cache %+v, want hello's one cached layer %+v", m.ErofsCache, hl)
	}
	wantPods := []Pod{{Name: "web", Path: "/etc/kubernetes/manifests/web.yaml", Containers: []Container{{Name: "web", Image: pinned}}}}
	if len(m.Pods) != 1 || m.Pods[0].Name != "web" || m.Pods[0].Path != wantPods[0].Path || !slices.Equal(m.Pods[0].Containers, wantPods[0].Containers) {
		t.Errorf("static pods %+v, want %+v", m.Pods, wantPods)
	}
	sum := sha256.Sum256(files["manifest.json"])
	if !strings.Contains(string(files["SHA256SUMS"]), hex.EncodeToString(sum[:])+"  manifest.json\n") {
		t.Errorf("SHA256SUMS does not hold manifest.json's sum:\n%s", files["SHA256SUMS"])
	}
	if again := release(t, testInputs(t, preseed, pods)); !bytes.Equal(again["manifest.json"], files["manifest.json"]) {
		t.Error("two releases of the same inputs differ in manifest.json")
	}
}

// A preseed manifest without references is refused, naming the file.
func TestReleaseRefusesManifestWithoutReferences(t *testing.T) {
	preseed, _ := preseedManifest(t)
	data, err := os.ReadFile(preseed)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string][]map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	delete(m["bundles"][0], "references")
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(preseed, data, 0o644); err != nil {
		t.Fatal(err)
	}
	err = run(testInputs(t, preseed, writePods(t, "hello:1.0")), "", "1", filepath.Join(t.TempDir(), "r.tar"))
	if err == nil || !strings.Contains(err.Error(), preseed) || !strings.Contains(err.Error(), "references") {
		t.Fatalf("want an error naming %s and its references, got %v", preseed, err)
	}
}

// A pod running an image the preseed manifest does not provide is refused,
// naming the listing, the pod and the image.
func TestReleaseRefusesPodNotPreseeded(t *testing.T) {
	preseed, _ := preseedManifest(t)
	image := "docker.io/library/other@sha256:" + strings.Repeat("0", 64)
	pods := writePods(t, image)
	err := run(testInputs(t, preseed, pods), "", "1", filepath.Join(t.TempDir(), "r.tar"))
	if err == nil || !strings.Contains(err.Error(), pods) || !strings.Contains(err.Error(), `pod "web"`) || !strings.Contains(err.Error(), image) {
		t.Fatalf("want an error naming %s, pod web and %s, got %v", pods, image, err)
	}
}

// goBinary is a Go binary to stand for /init: this test's own.
func goBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// The manifest's Go version is the one /init was built with, read from
// the binary; a file that is no Go binary is refused, naming it.
func TestReleaseGoVersionIsInit(t *testing.T) {
	preseed, pm := preseedManifest(t)
	files := release(t, testInputs(t, preseed, writePods(t, "example.com/multi@"+pm.Bundles[1].Target.Digest.String())))
	var m Manifest
	if err := json.Unmarshal(files["manifest.json"], &m); err != nil {
		t.Fatal(err)
	}
	bi, err := buildinfo.ReadFile(goBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if m.GoVersion != bi.GoVersion {
		t.Errorf("manifest go_version %q, want the init binary's %q", m.GoVersion, bi.GoVersion)
	}
	in := testInputs(t, preseed, writePods(t, "example.com/multi@"+pm.Bundles[1].Target.Digest.String()))
	in.init = in.kernelLock
	err = run(in, "", "1", filepath.Join(t.TempDir(), "r.tar"))
	if err == nil || !strings.Contains(err.Error(), in.init) {
		t.Fatalf("an init that is no Go binary: %v, want an error naming %s", err, in.init)
	}
}

// The release holds the disk compressed (it decompresses to the input's
// bytes, whose size and sha256 the manifest gives with the layout) and the
// UKI as it is; the manifest names the system the UKI boots.
func TestReleaseShipsDiskAndUKI(t *testing.T) {
	preseed, pm := preseedManifest(t)
	in := testInputs(t, preseed, writePods(t, "example.com/multi@"+pm.Bundles[1].Target.Digest.String()))
	files := release(t, in)
	var m Manifest
	if err := bundleformat.DecodeStrict(files["manifest.json"], &m); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(in.disk)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zstd.NewReader(bytes.NewReader(files[diskFile]))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	got, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("%s decompresses to %d bytes (%v), not the disk's %d", diskFile, len(got), err, len(raw))
	}
	sum := sha256.Sum256(raw)
	if m.Disk.File != diskFile || m.Disk.Size != int64(len(raw)) || m.Disk.SHA256 != hex.EncodeToString(sum[:]) || len(m.Disk.Layout.Partitions) != 1 {
		t.Errorf("manifest disk %+v, want %s of %d bytes, sha256 %x, with its layout", m.Disk, diskFile, len(raw), sum)
	}
	efi, err := os.ReadFile(in.uki)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(files[ukiFile], efi) {
		t.Errorf("%s differs from the UKI", ukiFile)
	}
	guid, _ := systemimage.PartitionGUID(rootHash)
	if m.System.RootHash != rootHash || m.System.PartitionGUID != guid || !strings.Contains(m.System.Cmdline, rootHash) {
		t.Errorf("manifest system %+v, want root hash %s, partition %s", m.System, rootHash, guid)
	}
	if len(m.Artifacts) != 2 || m.Artifacts[0].File != diskFile || m.Artifacts[1].File != ukiFile {
		t.Errorf("artifacts %+v, want %s and %s", m.Artifacts, diskFile, ukiFile)
	}
}

// Inputs that do not belong together are refused, naming the files: a
// UKI that boots another system, a layout of another system or size.
func TestReleaseRefusesMismatchedSystem(t *testing.T) {
	preseed, pm := preseedManifest(t)
	pods := writePods(t, "example.com/multi@"+pm.Bundles[1].Target.Digest.String())
	other := strings.Repeat("ab", 32)
	for name, c := range map[string]struct {
		change func(*inputs)
		want   []string
	}{
		"uki of another system": {func(in *inputs) { in.uki = testUKI(t, t.TempDir(), other) }, []string{"the UKI", other, rootHash}},
		"layout of another system": {func(in *inputs) {
			b, _ := os.ReadFile(in.diskLayout)
			in.diskLayout = writeFile(t, t.TempDir(), "layout.json", bytes.ReplaceAll(b, []byte(rootHash), []byte(other)))
		}, []string{"disk layout", other}},
		"disk of another size": {func(in *inputs) { in.disk = writeFile(t, t.TempDir(), "disk.raw", []byte("short")) }, []string{"is 5 bytes, its layout says"}},
	} {
		in := testInputs(t, preseed, pods)
		c.change(&in)
		err := run(in, "", "1", filepath.Join(t.TempDir(), "r.tar"))
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v, want an error with %q", name, err, w)
			}
		}
	}
}
