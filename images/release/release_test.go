// Package release_test checks the release archive as a user verifies it:
// unpacked, `sha256sum -c SHA256SUMS` passes, the compressed disk
// decompresses to the build's disk image and the UKI is the build's, and
// manifest.json names the disk's layout and the system's root hash, every
// preseeded image of the build with its digests, the static pods hello and
// hello-web with their paths and the digest references they run, and every
// artifact with its sha256.
package release_test

import (
	"archive/tar"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/appliance-bundler/appliance/tests/runfile"
)

func unpack(t *testing.T, archive, dir string) []string {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("bad archive: %v", err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(h.ModTime.Truncate(0)) || h.ModTime.Unix() != 0 || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: mtime %v uid %d gid %d, want 0", h.Name, h.ModTime, h.Uid, h.Gid)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

func TestReleaseVerifiesAndNamesEverything(t *testing.T) {
	dir := t.TempDir()
	names := unpack(t, runfile.Path(t, "RELEASE"), dir)
	want := []string{"appliance-0.0.0-dev/", "appliance-0.0.0-dev/disk.raw.zst", "appliance-0.0.0-dev/uki.efi",
		"appliance-0.0.0-dev/manifest.json", "appliance-0.0.0-dev/SHA256SUMS"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("archive entries %v, want %v", names, want)
	}
	rel := filepath.Join(dir, "appliance-0.0.0-dev")

	cmd := exec.Command("sha256sum", "-c", "--strict", "SHA256SUMS")
	cmd.Dir = rel
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}
	// The archive's files are the build's, bit for bit.
	if got, want := sha(t, filepath.Join(rel, "uki.efi")), sha(t, runfile.Path(t, "UKI")); got != want {
		t.Errorf("uki.efi sha256 %s, the build's %s", got, want)
	}
	rawSum, rawSize := decompressedSum(t, filepath.Join(rel, "disk.raw.zst"))
	if want := sha(t, runfile.Path(t, "DISK")); rawSum != want {
		t.Errorf("disk.raw.zst decompresses to sha256 %s, the build's disk is %s", rawSum, want)
	}

	var m struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
		Kernel    struct {
			Packages []struct{ Name, Version string } `json:"packages"`
		} `json:"kernel"`
		System struct {
			RootHash string `json:"root_hash"`
			Cmdline  string `json:"cmdline"`
		} `json:"system"`
		Disk struct {
			Size   int64           `json:"size"`
			SHA256 string          `json:"sha256"`
			Layout json.RawMessage `json:"layout"`
		} `json:"disk"`
		Images []struct {
			Namespace       string   `json:"namespace"`
			Name            string   `json:"name"`
			Reference       string   `json:"reference"`
			IndexDigest     string   `json:"index_digest"`
			ManifestDigests []string `json:"manifest_digests"`
			Size            int64    `json:"size"`
			SHA256          string   `json:"sha256"`
		} `json:"preseeded_images"`
		Pods []struct {
			Name       string `json:"name"`
			Path       string `json:"path"`
			Containers []struct {
				Name  string `json:"name"`
				Image string `json:"image"`
			} `json:"containers"`
		} `json:"static_pods"`
		Artifacts []struct {
			File   string `json:"file"`
			SHA256 string `json:"sha256"`
		} `json:"artifacts"`
	}
	data, _ := os.ReadFile(filepath.Join(rel, "manifest.json"))
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if m.Version != "0.0.0-dev" || !strings.HasPrefix(m.GoVersion, "go1.") || len(m.Kernel.Packages) != 2 {
		t.Errorf("manifest header: version %q, go %q, kernel packages %v", m.Version, m.GoVersion, m.Kernel.Packages)
	}
	checkDisk(t, m.Disk.Layout, m.System.RootHash, m.System.Cmdline)
	if m.Disk.SHA256 != rawSum || m.Disk.Size != rawSize {
		t.Errorf("manifest disk: %d bytes sha256 %s; the image decompresses to %d bytes %s", m.Disk.Size, m.Disk.SHA256, rawSize, rawSum)
	}
	var preseed struct {
		Bundles []struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
			Reference string `json:"reference"`
			Target    struct {
				Digest string `json:"digest"`
			} `json:"target"`
			IndexDigest string `json:"index_digest"`
			SHA256      string `json:"sha256"`
			Manifests   []struct {
				Digest string `json:"digest"`
			} `json:"manifests"`
		} `json:"bundles"`
	}
	pdata, _ := os.ReadFile(runfile.Path(t, "PRESEED_JSON"))
	if err := json.Unmarshal(pdata, &preseed); err != nil {
		t.Fatal(err)
	}
	if len(m.Images) != len(preseed.Bundles) || len(m.Images) != 3 {
		t.Fatalf("manifest lists %d images, the build preseeds %d (want 3)", len(m.Images), len(preseed.Bundles))
	}
	for _, b := range preseed.Bundles {
		found := false
		for _, img := range m.Images {
			if img.Namespace == b.Namespace && img.Name == b.Name {
				found = true
				if img.IndexDigest != b.IndexDigest || img.SHA256 != b.SHA256 || len(img.ManifestDigests) != 1 || img.ManifestDigests[0] != b.Manifests[0].Digest {
					t.Errorf("image %s/%s in the manifest %+v differs from the build's %+v", b.Namespace, b.Name, img, b)
				}
			}
		}
		if !found {
			t.Errorf("image %s/%s is not in the manifest", b.Namespace, b.Name)
		}
	}
	// Each production pod runs its bundle's image by digest: the name
	// preseed registers, repo@<target digest>.
	pinned := map[string]string{}
	for _, b := range preseed.Bundles {
		// The references are name:tag, their tag after the last colon.
		pinned[b.Name] = b.Reference[:strings.LastIndex(b.Reference, ":")] + "@" + b.Target.Digest
	}
	var pods []string
	for _, p := range m.Pods {
		var images []string
		for _, c := range p.Containers {
			images = append(images, c.Name+"="+c.Image)
		}
		pods = append(pods, p.Name+" "+p.Path+" "+strings.Join(images, ","))
	}
	wantPods := []string{
		"hello /etc/kubernetes/manifests/hello.yaml hello=" + pinned["hello"],
		"hello-web /etc/kubernetes/manifests/hello-web.yaml hello-web=" + pinned["hello-web"],
	}
	if strings.Join(pods, "\n") != strings.Join(wantPods, "\n") {
		t.Errorf("the release lists the static pods\n%s\nwant\n%s", strings.Join(pods, "\n"), strings.Join(wantPods, "\n"))
	}
	// Exactly the release's artifacts are listed, each with its sum.
	var listed []string
	for _, a := range m.Artifacts {
		listed = append(listed, a.File)
		if got := sha(t, filepath.Join(rel, a.File)); got != a.SHA256 {
			t.Errorf("artifact %s: manifest says %s, file is %s", a.File, a.SHA256, got)
		}
	}
	if want := []string{"disk.raw.zst", "uki.efi"}; !slices.Equal(listed, want) {
		t.Errorf("the manifest lists artifacts %q, want %q", listed, want)
	}
	// And the Go version is the one /init was built with.
	if bi, err := buildinfo.ReadFile(runfile.Path(t, "INIT")); err != nil || m.GoVersion != bi.GoVersion {
		t.Errorf("manifest go_version %q, /init's %v (%v)", m.GoVersion, bi, err)
	}
}

// decompressedSum is the sha256 and size of the zstd file at path once
// decompressed.
func decompressedSum(t *testing.T, path string) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	h := sha256.New()
	n, err := io.Copy(h, zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// checkDisk wants the manifest's layout to be the build's, with the
// system's root hash, which the UKI's command line carries.
func checkDisk(t *testing.T, layout json.RawMessage, rootHash, cmdline string) {
	t.Helper()
	data, err := os.ReadFile(runfile.Path(t, "DISK_LAYOUT"))
	if err != nil {
		t.Fatal(err)
	}
	var want, got any
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(layout, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("manifest layout %s, the build's %s", layout, data)
	}
	if len(rootHash) != 64 || !strings.Contains(string(data), `"system_root_hash": "`+rootHash+`"`) ||
		!strings.Contains(cmdline, "appliance.system.roothash="+rootHash) {
		t.Errorf("system root hash %q: not the layout's (%s) or not on the command line %q", rootHash, data, cmdline)
	}
}
