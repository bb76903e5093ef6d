// Command mkrelease packs the appliance's release: one tar archive holding
// the disk image (zstd-compressed), the Unified Kernel Image, a manifest
// (JSON: version, kernel packages, Go version, the system image's dm-verity
// root hash and the UKI's command line, the disk's partition layout with
// GUIDs, offsets and sizes, every preseeded image with its digests and the
// names a pod may give it, every blob of the EROFS layer content cache, every
// static pod with its path in the appliance and the digest reference each
// container runs, and the sha256 of every artifact) and a SHA256SUMS file
// that `sha256sum -c` checks.
//
// It refuses inputs that do not belong together: the UKI must boot the
// system the disk's slot A holds (same root hash on its command line, in the
// layout and in the system image's info, and the slot's GUID derived from
// it).
//
// The archive is deterministic: fixed entry order, mtime 0, uid/gid 0, and
// zstd with fixed settings on one goroutine. It must not read anything but
// its inputs, nor put a timestamp or a host path into the release.
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
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/appliance-bundler/appliance/build/appliance/uki"
	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/disklayout"
	"github.com/appliance-bundler/appliance/core/systemimage"
)

// Manifest is manifest.json of a release.
type Manifest struct {
	Version   string  `json:"version"`
	GoVersion string  `json:"go_version"`
	Kernel    Kernel  `json:"kernel"`
	System    System  `json:"system"`
	Disk      Disk    `json:"disk"`
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

// Kernel names the Debian packages the kernel comes from (the kernel is
// in the UKI).
type Kernel struct {
	Packages []Package `json:"packages"`
}

// System is the system image in slot A of the disk, which the UKI boots.
type System struct {
	// RootHash is its dm-verity root hash: the kernel checks every block
	// read from the system partition against it.
	RootHash   string `json:"root_hash"`
	HashOffset uint64 `json:"hash_offset"`
	// Size is the image's size, hash tree included.
	Size int64 `json:"size"`
	// PartitionGUID is the slot's GUID, the root hash's first half.
	PartitionGUID string `json:"partition_guid"`
	// Cmdline is the UKI's kernel command line.
	Cmdline string `json:"cmdline"`
}

// Disk is the disk image: the file in the release, compressed, and what
// it holds once decompressed.
type Disk struct {
	File        string `json:"file"`
	Compression string `json:"compression"`
	// Size and SHA256 are the raw image's (what `zstd -d` gives).
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Layout is the partition table: GUIDs, offsets and sizes in bytes.
	Layout disklayout.Layout `json:"layout"`
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

// Names of the release's files in its directory.
const (
	diskFile = "disk.raw.zst"
	ukiFile  = "uki.efi"
)

// inputs are the files a release is made of.
type inputs struct {
	uki, disk, diskLayout, systemInfo string
	// init is the system's /init binary: the manifest's Go version is the
	// one it was built with.
	init                      string
	kernelLock, preseed, pods string
}

func run(in inputs, statusFile, fallback, out string) error {
	v, err := version(statusFile, fallback)
	if err != nil {
		return err
	}
	m := Manifest{Version: v}
	if err := describeSoftware(in, &m); err != nil {
		return err
	}
	if m.System, err = describeSystem(in); err != nil {
		return err
	}
	// The compressed disk is written beside the archive first: its
	// sha256 goes into the manifest, which precedes nothing but is
	// hashed into SHA256SUMS with the other files.
	compressed := out + ".disk.zst.tmp"
	defer os.Remove(compressed)
	layout, err := readLayout(in.diskLayout, m.System)
	if err != nil {
		return err
	}
	if m.Disk, err = compressDisk(in.disk, layout, compressed); err != nil {
		return err
	}
	files := []input{{diskFile, compressed}, {ukiFile, in.uki}}
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
	return writeArchive(out, "appliance-"+v+"/", files, manifest, sums.Bytes())
}

// describeSoftware fills in what the appliance runs: the kernel's
// packages, init's Go version, the preseeded images, the EROFS cache and
// the static pods.
func describeSoftware(in inputs, m *Manifest) error {
	var lock kernelLock
	if err := readJSON(in.kernelLock, &lock); err != nil {
		return err
	}
	pm, err := readPreseed(in.preseed)
	if err != nil {
		return err
	}
	if m.Pods, err = readPods(in.pods, pm); err != nil {
		return err
	}
	bi, err := buildinfo.ReadFile(in.init)
	if err != nil {
		return fmt.Errorf("the init binary %s: %w", in.init, err)
	}
	m.GoVersion = bi.GoVersion
	for _, p := range lock.Packages {
		m.Kernel.Packages = append(m.Kernel.Packages, Package{Name: p.Package, Version: p.Version, SHA256: p.SHA256})
	}
	sort.Slice(m.Kernel.Packages, func(i, j int) bool { return m.Kernel.Packages[i].Name < m.Kernel.Packages[j].Name })
	m.Images = preseededImages(pm)
	if m.ErofsCache, err = cacheBlobs(pm); err != nil {
		return fmt.Errorf("the preseed manifest %s: %w", in.preseed, err)
	}
	return nil
}

// describeSystem reads the system the UKI boots from its command line and
// checks it is the system image the build made.
func describeSystem(in inputs) (System, error) {
	efi, err := os.ReadFile(in.uki)
	if err != nil {
		return System{}, fmt.Errorf("failed to read the UKI: %w", err)
	}
	booted, cmdline, err := uki.System(efi)
	if err != nil {
		return System{}, fmt.Errorf("the UKI %s boots no system image: %w", in.uki, err)
	}
	info, err := systemimage.ReadInfo(in.systemInfo)
	if err != nil {
		return System{}, err
	}
	if booted.RootHash != info.RootHash || booted.HashOffset != info.HashOffset {
		return System{}, fmt.Errorf("the UKI %s boots root hash %s (hash offset %d), the system image %s has %s (%d)",
			in.uki, booted.RootHash, booted.HashOffset, in.systemInfo, info.RootHash, info.HashOffset)
	}
	guid, err := systemimage.PartitionGUID(info.RootHash)
	if err != nil {
		return System{}, err
	}
	return System{RootHash: info.RootHash, HashOffset: info.HashOffset, Size: info.Size, PartitionGUID: guid, Cmdline: cmdline}, nil
}

// readLayout reads the disk's layout and checks that its slot A holds the
// system sys.
func readLayout(path string, sys System) (disklayout.Layout, error) {
	var l disklayout.Layout
	data, err := os.ReadFile(path)
	if err != nil {
		return l, fmt.Errorf("failed to read %s: %w", path, err)
	}
	if err := bundleformat.DecodeStrict(data, &l); err != nil {
		return l, fmt.Errorf("the disk layout %s is not valid: %w", path, err)
	}
	if l.SystemRootHash != sys.RootHash {
		return l, fmt.Errorf("the disk layout %s holds the system of root hash %q, the UKI boots %s", path, l.SystemRootHash, sys.RootHash)
	}
	for _, p := range l.Partitions {
		if p.Name == disklayout.SystemA && strings.EqualFold(p.GUID, sys.PartitionGUID) {
			return l, nil
		}
	}
	return l, fmt.Errorf("the disk layout %s has no %s partition with GUID %s (the root hash's first half)", path, disklayout.SystemA, sys.PartitionGUID)
}

// compressDisk writes the raw disk image at path, laid out as layout, to
// out with zstd (one goroutine: the same bytes give the same output) and
// describes it.
func compressDisk(path string, layout disklayout.Layout, out string) (Disk, error) {
	d := Disk{File: diskFile, Compression: "zstd", Layout: layout}
	src, err := os.Open(path)
	if err != nil {
		return d, fmt.Errorf("failed to open the disk image: %w", err)
	}
	defer src.Close()
	dst, err := os.Create(out)
	if err != nil {
		return d, fmt.Errorf("failed to create %s: %w", out, err)
	}
	defer dst.Close()
	zw, err := zstd.NewWriter(dst, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	if err != nil {
		return d, err
	}
	h := sha256.New()
	if d.Size, err = io.Copy(io.MultiWriter(h, zw), src); err != nil {
		return d, fmt.Errorf("failed to compress the disk image %s: %w", path, err)
	}
	if err := errors.Join(zw.Close(), dst.Close()); err != nil {
		return d, fmt.Errorf("failed to write %s: %w", out, err)
	}
	if d.Size != d.Layout.Size {
		return d, fmt.Errorf("the disk image %s is %d bytes, its layout says %d", path, d.Size, d.Layout.Size)
	}
	d.SHA256 = hex.EncodeToString(h.Sum(nil))
	return d, nil
}

// writeArchive writes the release tar: dir, then files, manifest.json and
// SHA256SUMS in it.
func writeArchive(out, dir string, files []input, manifest, sums []byte) error {
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
	}{{"manifest.json", manifest}, {"SHA256SUMS", sums}} {
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
	var in inputs
	flag.StringVar(&in.uki, "uki", "", "the Unified Kernel Image")
	flag.StringVar(&in.disk, "disk", "", "the raw disk image")
	flag.StringVar(&in.diskLayout, "disk_layout", "", "the disk image's layout (JSON, core/disklayout)")
	flag.StringVar(&in.systemInfo, "system_info", "", "the system image's info (JSON, core/systemimage)")
	flag.StringVar(&in.init, "init", "", "the system's /init binary (its Go version goes into the manifest)")
	flag.StringVar(&in.kernelLock, "kernel_lock", "", "third_party/linux/kernel.lock.json")
	flag.StringVar(&in.preseed, "preseed_manifest", "", "the preseed manifest (//images:preseed.json)")
	flag.StringVar(&in.pods, "pods", "", "the static pods listing (//images:pods_json)")
	status := flag.String("stable_status", "", "Bazel's stable status file (stamped builds)")
	fallback := flag.String("default_version", "0.0.0-dev", "the version when not stamped")
	out := flag.String("out", "", "the release archive to write")
	flag.Parse()
	for _, v := range []string{in.uki, in.disk, in.diskLayout, in.systemInfo, in.init, in.kernelLock, in.preseed, in.pods, *out} {
		if v == "" {
			fmt.Fprintln(os.Stderr, "usage: mkrelease -uki F -disk F -disk_layout F -system_info F -init F -kernel_lock F -preseed_manifest F -pods F [-stable_status F] -out F")
			os.Exit(2)
		}
	}
	if err := run(in, *status, *fallback, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkrelease:", err)
		os.Exit(1)
	}
}
