// Package verity appends a dm-verity superblock and hash tree to an image
// file at build time, reproducibly: the salt and UUID are given, not drawn.
// The layout is the one containerd's dmverity.FormatLayer writes and
// veritysetup reads with --hash-offset: the superblock at the image's size
// rounded up to a block, the tree right after it. The EROFS layer cache
// (build/oci/erofs) and the system image (build/appliance) both use it.
//
// It must not open dm devices: the appliance does that, with the root hash
// this returns.
package verity

import (
	"errors"
	"fmt"
	"os"

	"github.com/containerd/go-dmverity/pkg/verity"
	"github.com/google/uuid"
)

// Tree is where Append put the hash tree, and its root hash.
type Tree struct {
	// RootHash is the hex sha256 root hash.
	RootHash string
	// HashOffset is the byte offset of the verity superblock (the data's
	// size rounded up to a block): veritysetup's --hash-offset.
	HashOffset uint64
	// DataBlocks is the number of data blocks the tree covers.
	DataBlocks uint64
	// Size is the file's size with the tree.
	Size int64
}

// Append appends the superblock and hash tree of image's contents, in
// blocks of blockSize, with a salt of 32 zero bytes (containerd's default)
// and id as the superblock's UUID.
func Append(image string, blockSize uint32, id uuid.UUID) (Tree, error) {
	fi, err := os.Stat(image)
	if err != nil {
		return Tree{}, fmt.Errorf("failed to stat the image: %w", err)
	}
	bs := int64(blockSize)
	blocks := (fi.Size() + bs - 1) / bs
	if blocks == 0 {
		return Tree{}, errors.New("the image is empty")
	}
	p := verity.DefaultParams()
	p.DataBlockSize, p.HashBlockSize = blockSize, blockSize
	p.DataBlocks = uint64(blocks)
	p.HashAreaOffset = uint64(blocks * bs)
	p.Salt, p.SaltSize = make([]byte, 32), 32
	p.UUID = id
	tree, err := verity.GetHashTreeSize(&p)
	if err != nil {
		return Tree{}, fmt.Errorf("failed to size the hash tree: %w", err)
	}
	size := int64(p.HashAreaOffset) + (verity.SuperblockSize+bs-1)/bs*bs + int64(tree)
	if err := os.Truncate(image, size); err != nil {
		return Tree{}, fmt.Errorf("failed to grow the image for its hash tree: %w", err)
	}
	hashOffset, dataBlocks := p.HashAreaOffset, p.DataBlocks
	root, err := verity.Create(&p, image, image)
	if err != nil {
		return Tree{}, fmt.Errorf("failed to build the dm-verity hash tree: %w", err)
	}
	return Tree{RootHash: fmt.Sprintf("%x", root), HashOffset: hashOffset, DataBlocks: dataBlocks, Size: size}, nil
}
