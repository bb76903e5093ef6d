// Command mkrelease packs the appliance's release: one tar archive holding
// the kernel, the production initramfs, a manifest (JSON: version, kernel
// package, Go version, every preseeded image with its digests and the names
// a pod may give it, every blob of the EROFS layer content cache with its
// dm-verity root hash, every static pod with its path in the appliance and the
// digest reference each container runs, and the sha256 of every artifact)
// and a SHA256SUMS
// file that `sha256sum -c` checks.
// The archive is deterministic: fixed entry order, mtime 0, uid/gid 0.
// It must not read anything but its inputs, nor put a timestamp or a host
// path into the release.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// Manifest is manifest.json of a release.
type Manifest struct {
	Version   string  `json:"version"`
	GoVersion string  `json:"go_version"`
	Kernel    Kernel  `json:"kernel"`
	Images    []Image `json:"preseeded_images"`
	// ErofsCache are the blobs of the appliance's EROFS layer content
	// cache, each once, sorted by path.
	ErofsCache []CacheBlob `json:"erofs_cache"`
	Pods       []Pod       `json:"static_pods"`
	Artifacts  []Artifact  `json:"artifacts"`
}

// Pod is one static pod of the appliance (from the static_pods listing).
type Pod struct {
	Name string `json:"name"`
	// Path is the pod's manifest in the appliance.
	Path string `json:"path"`
	// Containers are init containers, then containers, in the pod's order.
	Containers []Container `json:"containers"`
}

// Container is what one container of a pod runs.
type Container struct {
	Name string `json:"name"`
	// Image is the digest reference, repo@sha256:...: a preseeded image.
	Image string `json:"image"`
}

// podsListing is the static_pods rule's JSON (staticpod.Pods).
type podsListing struct {
	Pods []struct {
		Name   string `json:"name"`
		Path   string `json:"path"`
		Images []struct {
			Container string `json:"container"`
			Image     string `json:"image"`
		} `json:"images"`
	} `json:"pods"`
}

// readPods reads the appliance's pods listing and checks that each
// container runs a reference of a preseeded image: the release must not
// name an image it does not ship.
func readPods(path string, pm *bundleformat.Manifest) ([]Pod, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", path, err)
	}
	var l podsListing
	if err := bundleformat.DecodeStrict(data, &l); err != nil {
		return nil, fmt.Errorf("the pods listing %s is not valid: %w", path, err)
	}
	refs := map[string]bool{}
	for _, b := range pm.Bundles {
		for _, r := range b.References {
			refs[r] = true
		}
	}
	pods := []Pod{}
	for _, p := range l.Pods {
		pod := Pod{Name: p.Name, Path: p.Path, Containers: []Container{}}
		for _, img := range p.Images {
			if !refs[img.Image] {
				return nil, fmt.Errorf("the pods listing %s: pod %q runs %s, which the preseed manifest does not provide", path, p.Name, img.Image)
			}
			pod.Containers = append(pod.Containers, Container{Name: img.Container, Image: img.Image})
		}
		pods = append(pods, pod)
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods, nil
}

// Kernel names the Debian packages the kernel comes from.
type Kernel struct {
	File     string    `json:"file"`
	Packages []Package `json:"packages"`
}

// Package is one pinned Debian package.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	SHA256  string `json:"deb_sha256"`
}

// Image is one preseeded image (from the build's preseed manifest).
type Image struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	Reference   string `json:"reference"`
	Bundle      string `json:"bundle"`
	IndexDigest string `json:"index_digest"`
	// TargetDigest is the image's digest: what it was built or pinned as
	// (for an index, the index's).
	TargetDigest string `json:"target_digest"`
	// Platforms are those an index was narrowed to; absent if it holds all.
	Platforms       []string `json:"platforms,omitempty"`
	ManifestDigests []string `json:"manifest_digests"`
	// References are the names a pod may give the image: its tag,
	// repo@target digest and repo@ each manifest digest.
	References []string `json:"references"`
	Size       int64    `json:"size"`
	SHA256     string   `json:"sha256"`
}

// CacheBlob is one layer's EROFS blob in the appliance (from the preseed
// manifest's cached_layers).
type CacheBlob struct {
	DiffID string `json:"diff_id"`
	// Path is the blob's path in the appliance.
	Path string `json:"path"`
	// Size is its size in bytes, dm-verity hash tree included.
	Size int64 `json:"size"`
	// RootHash is its dm-verity root hash: the kernel checks every block
	// read against it.
	RootHash string `json:"root_hash"`
}

// cacheBlobs lists the preseed manifest's cached layers once per blob,
// refusing one blob listed with two sizes or root hashes.
func cacheBlobs(pm *bundleformat.Manifest) ([]CacheBlob, error) {
	seen := map[string]CacheBlob{}
	out := []CacheBlob{}
	for _, b := range pm.Bundles {
		for _, c := range b.CachedLayers {
			blob := CacheBlob{DiffID: c.DiffID.String(), Path: c.Path, Size: c.Size, RootHash: c.RootHash}
			if other, ok := seen[c.Path]; ok {
				if other != blob {
					return nil, fmt.Errorf("cache blob %s is listed as %+v and, by bundle %s, as %+v", c.Path, other, b.Path, blob)
				}
				continue
			}
			seen[c.Path] = blob
			out = append(out, blob)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// Artifact is one file of the release.
type Artifact struct {
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// readPreseed reads the build's preseed manifest (//images:preseed.json)
// with the format's strict parser: the release describes exactly what the
// appliance enforces.
func readPreseed(path string) (*bundleformat.Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", path, err)
	}
	pm, err := bundleformat.ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("the preseed manifest %s: %w", path, err)
	}
	return pm, nil
}

// kernelLock is the part of third_party/linux/kernel.lock.json read here.
type kernelLock struct {
	Packages map[string]struct {
		Package string `json:"package"`
		Version string `json:"version"`
		SHA256  string `json:"sha256"`
	} `json:"packages"`
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", path, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s is not valid: %w", path, err)
	}
	return nil
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("failed to open %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("failed to read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// version reads STABLE_APPLIANCE_VERSION from Bazel's stable status file.
func version(statusFile, fallback string) (string, error) {
	if statusFile == "" {
		return fallback, nil
	}
	f, err := os.Open(statusFile)
	if err != nil {
		return "", fmt.Errorf("failed to open %s: %w", statusFile, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "STABLE_APPLIANCE_VERSION "); ok && v != "" {
			return v, nil
		}
	}
	return fallback, sc.Err()
}

// preseededImages lists the preseed manifest's bundles for the release,
// sorted by namespace and name.
func preseededImages(pm *bundleformat.Manifest) []Image {
	var out []Image
	for _, b := range pm.Bundles {
		img := Image{Namespace: b.Namespace, Name: b.Name, Reference: b.Reference, Bundle: b.Path,
			IndexDigest: b.IndexDigest.String(), TargetDigest: b.Target.Digest.String(),
			References: b.References, Size: b.Size, SHA256: b.SHA256}
		if v := b.Target.Annotations[bundleformat.AnnotationPlatforms]; v != "" {
			img.Platforms = strings.Split(v, ",")
		}
		for _, md := range b.Manifests {
			img.ManifestDigests = append(img.ManifestDigests, md.Digest.String())
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name
	})
	return out
}

type input struct{ name, path string }

// inputs are the files a release is made of.
type inputs struct {
	kernel, initramfs, kernelLock, preseed, pods string
	// init is the /init binary the initramfs holds: the manifest's Go
	// version is the one it was built with.
	init string
}

func run(in inputs, statusFile, fallback, out string) error {
	v, err := version(statusFile, fallback)
	if err != nil {
		return err
	}
	var lock kernelLock
	if err := readJSON(in.kernelLock, &lock); err != nil {
		return err
	}
	pm, err := readPreseed(in.preseed)
	if err != nil {
		return err
	}
	pods, err := readPods(in.pods, pm)
	if err != nil {
		return err
	}
	bi, err := buildinfo.ReadFile(in.init)
	if err != nil {
		return fmt.Errorf("the init binary %s: %w", in.init, err)
	}
	m := Manifest{Version: v, GoVersion: bi.GoVersion, Kernel: Kernel{File: "vmlinuz"}}
	for _, p := range lock.Packages {
		m.Kernel.Packages = append(m.Kernel.Packages, Package{Name: p.Package, Version: p.Version, SHA256: p.SHA256})
	}
	sort.Slice(m.Kernel.Packages, func(i, j int) bool { return m.Kernel.Packages[i].Name < m.Kernel.Packages[j].Name })
	m.Images = preseededImages(pm)
	if m.ErofsCache, err = cacheBlobs(pm); err != nil {
		return fmt.Errorf("the preseed manifest %s: %w", in.preseed, err)
	}
	m.Pods = pods

	files := []input{{"vmlinuz", in.kernel}, {filepath.Base(in.initramfs), in.initramfs}}
	var sums bytes.Buffer
	for _, f := range files {
		sum, size, err := hashFile(f.path)
		if err != nil {
			return err
		}
		m.Artifacts = append(m.Artifacts, Artifact{File: f.name, Size: size, SHA256: sum})
		fmt.Fprintf(&sums, "%s  %s\n", sum, f.name)
	}
	manifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	manifest = append(manifest, '\n')
	ms := sha256.Sum256(manifest)
	fmt.Fprintf(&sums, "%s  manifest.json\n", hex.EncodeToString(ms[:]))

	dir := "appliance-" + v + "/"
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", out, err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	hdr := func(name string, size int64, mode int64, typ byte) *tar.Header {
		return &tar.Header{Typeflag: typ, Name: name, Size: size, Mode: mode, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
	}
	err = tw.WriteHeader(hdr(dir, 0, 0o755, tar.TypeDir))
	for _, f := range files {
		if err != nil {
			break
		}
		err = copyInto(tw, hdr, dir+f.name, f.path)
	}
	for _, e := range []struct {
		name string
		data []byte
	}{{"manifest.json", manifest}, {"SHA256SUMS", sums.Bytes()}} {
		if err != nil {
			break
		}
		if err = tw.WriteHeader(hdr(dir+e.name, int64(len(e.data)), 0o644, tar.TypeReg)); err == nil {
			_, err = tw.Write(e.data)
		}
	}
	if err := errors.Join(err, tw.Close(), bw.Flush(), f.Close()); err != nil {
		return fmt.Errorf("failed to write %s: %w", out, err)
	}
	return nil
}

func copyInto(tw *tar.Writer, hdr func(string, int64, int64, byte) *tar.Header, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("failed to stat %s: %w", path, err)
	}
	if err := tw.WriteHeader(hdr(name, st.Size(), 0o644, tar.TypeReg)); err != nil {
		return err
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("failed to copy %s: %w", path, err)
	}
	return nil
}

func main() {
	kernel := flag.String("kernel", "", "the kernel (vmlinuz)")
	initramfs := flag.String("initramfs", "", "the production initramfs")
	initBin := flag.String("init", "", "the /init binary of the initramfs (its Go version goes into the manifest)")
	lock := flag.String("kernel_lock", "", "third_party/linux/kernel.lock.json")
	preseed := flag.String("preseed_manifest", "", "the preseed manifest (//images:preseed.json)")
	pods := flag.String("pods", "", "the static pods listing (//images:pods_json)")
	status := flag.String("stable_status", "", "Bazel's stable status file (stamped builds)")
	fallback := flag.String("default_version", "0.0.0-dev", "the version when not stamped")
	out := flag.String("out", "", "the release archive to write")
	flag.Parse()
	if *kernel == "" || *initramfs == "" || *initBin == "" || *lock == "" || *preseed == "" || *pods == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: mkrelease -kernel F -initramfs F -init F -kernel_lock F -preseed_manifest F -pods F [-stable_status F] -out F")
		os.Exit(2)
	}
	in := inputs{kernel: *kernel, initramfs: *initramfs, init: *initBin, kernelLock: *lock, preseed: *preseed, pods: *pods}
	if err := run(in, *status, *fallback, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkrelease:", err)
		os.Exit(1)
	}
}
