// Command mksystem writes the appliance's system image (core/systemimage):
// the root tree, given as a tar (mkinitramfs -format tar), made into an
// uncompressed EROFS image by the pinned mkfs.erofs, with its dm-verity
// hash tree appended (build/verity), and the image's Info as JSON.
//
// The pinned mkfs.erofs rather than go-erofs's young writer (v0.3): it is
// the reference writer the kernel's reader is tested against, and the one
// the layer cache is made with, so the build has one EROFS writer.
// Uncompressed: the layer blobs inside are what most of the bytes are, and
// they are read in place by the appliance; the release compresses the disk
// image as a whole.
// The same tar gives the same image: the EROFS UUID and the verity UUID
// derive from the tar's sha256, time stamps are fixed (core/node's mkfs
// options), and the salt is fixed.
package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/uuid"

	"github.com/appliance-bundler/appliance/build/erofsmkfs"
	"github.com/appliance-bundler/appliance/build/verity"
	"github.com/appliance-bundler/appliance/core/node"
	"github.com/appliance-bundler/appliance/core/systemimage"
)

// namespace is the UUID namespace of the image's derived UUIDs (a fixed
// random UUID of this tool).
const namespace = "0d3f6b8e-5a0c-4a8e-9f5e-2c7d1b4e8a31"

func main() {
	tree := flag.String("tree", "", "the root tree (tar)")
	out := flag.String("out", "", "the system image to write")
	info := flag.String("info", "", "where to write the image's info (JSON)")
	pinned := erofsmkfs.AddFlags(flag.CommandLine)
	flag.Parse()
	err := func() error {
		if *tree == "" || *out == "" || *info == "" {
			return fmt.Errorf("-tree, -out and -info are required")
		}
		mkfs, err := pinned()
		if err != nil {
			return err
		}
		return run(context.Background(), mkfs, *tree, *out, *info)
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mksystem:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, mkfs erofsmkfs.Mkfs, tree, out, infoPath string) error {
	sum, err := checkTree(tree)
	if err != nil {
		return err
	}
	if err := mkfsErofs(ctx, mkfs, tree, out, derived(sum, "erofs")); err != nil {
		return err
	}
	t, err := verity.Append(out, systemimage.BlockSize, derived(sum, "dm-verity"))
	if err != nil {
		return fmt.Errorf("system image %s: %w", out, err)
	}
	info := systemimage.Info{RootHash: t.RootHash, HashOffset: t.HashOffset, Size: t.Size}
	if err := info.Validate(); err != nil {
		return fmt.Errorf("system image %s: %w", out, err)
	}
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(infoPath, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", infoPath, err)
	}
	return nil
}

// derived is a UUID of what, derived from the tree's sha256.
func derived(treeSHA256, what string) uuid.UUID {
	return uuid.NewSHA1(uuid.MustParse(namespace), []byte(what+"/"+treeSHA256))
}

// mkfsErofs makes the EROFS image out of the tar, with the EROFS UUID id
// and block size systemimage.BlockSize.
func mkfsErofs(ctx context.Context, mkfs erofsmkfs.Mkfs, tree, out string, id uuid.UUID) error {
	dir, err := os.MkdirTemp("", "mksystem-")
	if err != nil {
		return fmt.Errorf("failed to create a work directory: %w", err)
	}
	defer os.RemoveAll(dir)
	bin, err := mkfs.Install(dir)
	if err != nil {
		return fmt.Errorf("failed to set up the pinned mkfs.erofs: %w", err)
	}
	args := append(node.ErofsMkfsOptions(), "--tar=f", "-U", id.String(), "-b", fmt.Sprint(systemimage.BlockSize), out, tree)
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "mkfs.erofs"), args...)
	cmd.Env = []string{"PATH=" + bin}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.erofs %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

// checkTree reads the whole tree as a tar and returns its sha256: a file
// that is not a tar, or an empty one, is an error here, as mkfs.erofs
// --tar=f makes an empty image of it without a word.
func checkTree(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("failed to open the tree: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	tr := tar.NewReader(io.TeeReader(f, h))
	entries := 0
	for {
		_, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("the tree %s is not a tar: %w", p, err)
		}
		entries++
	}
	if entries == 0 {
		return "", fmt.Errorf("the tree %s is an empty tar", p)
	}
	// The tar's padding after its end.
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("failed to read the tree %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
