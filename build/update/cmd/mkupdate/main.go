// Command mkupdate writes an update payload's files but its signature
// (core/updatepayload): the manifest, the zstd-compressed system image and
// the UKI's copy. It refuses a UKI that boots another system than the
// image's, or whose os-release has no valid IMAGE_VERSION, naming the
// files.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"

	"github.com/appliance-bundler/appliance/build/appliance/uki"
	"github.com/appliance-bundler/appliance/core/systemimage"
	"github.com/appliance-bundler/appliance/core/updatepayload"
)

type options struct {
	system, systemInfo, uki        string
	manifestOut, systemOut, ukiOut string
}

func main() {
	var o options
	flag.StringVar(&o.system, "system", "", "the system image")
	flag.StringVar(&o.systemInfo, "system-info", "", "its info (JSON, from mksystem)")
	flag.StringVar(&o.uki, "uki", "", "the UKI that boots it")
	flag.StringVar(&o.manifestOut, "manifest", "", "where to write "+updatepayload.ManifestFile)
	flag.StringVar(&o.systemOut, "system-out", "", "where to write "+updatepayload.SystemFile)
	flag.StringVar(&o.ukiOut, "uki-out", "", "where to write "+updatepayload.UKIFile)
	flag.Parse()
	if err := o.run(); err != nil {
		fmt.Fprintln(os.Stderr, "mkupdate:", err)
		os.Exit(1)
	}
}

func (o options) run() error {
	info, err := systemimage.ReadInfo(o.systemInfo)
	if err != nil {
		return err
	}
	efi, err := os.ReadFile(o.uki)
	if err != nil {
		return err
	}
	version, err := checkUKI(o.uki, efi, info)
	if err != nil {
		return err
	}
	m := updatepayload.Manifest{Format: updatepayload.Format, Version: version, System: updatepayload.System{Info: info}}
	if m.System.SHA256, m.System.Compressed, err = compress(o.system, o.systemOut, info.Size); err != nil {
		return err
	}
	sum := sha256.Sum256(efi)
	m.UKI = updatepayload.File{Size: int64(len(efi)), SHA256: hex.EncodeToString(sum[:])}
	if err := os.WriteFile(o.ukiOut, efi, 0o644); err != nil {
		return err
	}
	b, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("%s: %w", o.manifestOut, err)
	}
	return os.WriteFile(o.manifestOut, b, 0o644)
}

// checkUKI returns the UKI's version, once sure it boots info's system.
func checkUKI(path string, efi []byte, info systemimage.Info) (string, error) {
	got, _, err := uki.System(efi)
	if err != nil || got.RootHash != info.RootHash || got.HashOffset != info.HashOffset {
		return "", fmt.Errorf("the UKI %s boots the system with root hash %q, not the system image's %s (%v)", path, got.RootHash, info.RootHash, err)
	}
	v, err := uki.Version(efi)
	if err != nil {
		return "", fmt.Errorf("the UKI %s: %w", path, err)
	}
	return v, nil
}

// compress writes src zstd-compressed at dst, on one goroutine so that the
// bytes are the same each time, and returns the sha256 of src (which must
// be size bytes) and the size and sha256 of dst.
func compress(src, dst string, size int64) (string, updatepayload.File, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", updatepayload.File{}, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return "", updatepayload.File{}, err
	}
	defer out.Close()
	isum, zsum := sha256.New(), sha256.New()
	enc, err := zstd.NewWriter(io.MultiWriter(out, zsum), zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return "", updatepayload.File{}, err
	}
	n, err := io.Copy(enc, io.TeeReader(in, isum))
	if err == nil {
		err = enc.Close()
	}
	if err != nil {
		return "", updatepayload.File{}, fmt.Errorf("failed to compress %s: %w", src, err)
	}
	if n != size {
		return "", updatepayload.File{}, fmt.Errorf("the system image %s is %d bytes, its info says %d", src, n, size)
	}
	fi, err := out.Stat()
	if err != nil {
		return "", updatepayload.File{}, err
	}
	return hex.EncodeToString(isum.Sum(nil)), updatepayload.File{Size: fi.Size(), SHA256: hex.EncodeToString(zsum.Sum(nil))}, out.Close()
}
