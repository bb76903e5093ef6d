// Package systemimage is the contract of the appliance's system image
// between the build (build/appliance: mksystem writes it, mkuki puts its
// kernel arguments in the UKI's command line, mkdisk puts it in slot A) and
// init, which opens it at boot. The image is an EROFS root with its
// dm-verity superblock and hash tree appended (build/verity's layout); the
// kernel command line carries its root hash and hash offset, so the
// command line (covered by the UKI) is what the system is checked against;
// and the partition holding it is named by its root hash, as the UAPI
// group's Discoverable Partitions Specification does.
//
// It holds values only: it must not read or write disks.
package systemimage

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// BlockSize is the data and hash block size of the hash tree, and EROFS's
// block size.
const BlockSize = 4096

// DeviceName is the device-mapper name of the system's dm-verity device,
// which init's first stage opens and the verity log recognizes.
const DeviceName = "system"

// Kernel arguments that carry Info.
const (
	ArgRootHash   = "appliance.system.roothash"
	ArgHashOffset = "appliance.system.hashoffset"
)

// Info is what the build says of a system image: mksystem writes it as JSON
// beside the image.
type Info struct {
	// RootHash is the hex sha256 dm-verity root hash.
	RootHash string `json:"root_hash"`
	// HashOffset is the byte offset of the verity superblock: the EROFS
	// image's size rounded up to BlockSize. The data blocks are those
	// before it.
	HashOffset uint64 `json:"hash_offset"`
	// Size is the image's size, hash tree included.
	Size int64 `json:"size"`
}

// Validate tells whether i could describe an image.
func (i Info) Validate() error {
	if b, err := hex.DecodeString(i.RootHash); err != nil || len(b) != 32 {
		return fmt.Errorf("root hash %q is not 64 hex digits", i.RootHash)
	}
	if i.HashOffset == 0 || i.HashOffset%BlockSize != 0 {
		return fmt.Errorf("hash offset %d is not a positive multiple of %d", i.HashOffset, BlockSize)
	}
	if i.Size <= int64(i.HashOffset) {
		return fmt.Errorf("size %d leaves no room for a hash tree after offset %d", i.Size, i.HashOffset)
	}
	return nil
}

// DataBlocks is the number of blocks the hash tree covers.
func (i Info) DataBlocks() uint64 { return i.HashOffset / BlockSize }

// KernelArgs are the arguments that give init the image.
func (i Info) KernelArgs() []string {
	return []string{
		ArgRootHash + "=" + i.RootHash,
		ArgHashOffset + "=" + strconv.FormatUint(i.HashOffset, 10),
	}
}

// FromKernelArgs reads what KernelArgs wrote from the command line's
// arguments. It tells whether the command line names a system image at all
// (none: the appliance runs from its initramfs); one named in part or
// malformed is an error.
func FromKernelArgs(args []string) (Info, bool, error) {
	var i Info
	var hash, offset string
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case ArgRootHash:
			hash = v
		case ArgHashOffset:
			offset = v
		}
	}
	if hash == "" && offset == "" {
		return i, false, nil
	}
	i.RootHash = hash
	n, err := strconv.ParseUint(offset, 10, 64)
	if err != nil {
		return i, true, fmt.Errorf("%s=%q: %w", ArgHashOffset, offset, err)
	}
	i.HashOffset = n
	if b, err := hex.DecodeString(hash); err != nil || len(b) != 32 {
		return i, true, fmt.Errorf("%s=%q is not 64 hex digits", ArgRootHash, hash)
	}
	if n == 0 || n%BlockSize != 0 {
		return i, true, fmt.Errorf("%s=%d is not a positive multiple of %d", ArgHashOffset, n, BlockSize)
	}
	return i, true, nil
}

// PartitionGUID is the GUID of the partition that holds the image of
// rootHash: its first 128 bits, as the Discoverable Partitions
// Specification names a verity-protected root partition. A slot's GUID
// thus says which system it holds, and the UKI of that system finds it.
func PartitionGUID(rootHash string) (string, error) {
	b, err := hex.DecodeString(rootHash)
	if err != nil || len(b) != 32 {
		return "", fmt.Errorf("root hash %q is not 64 hex digits", rootHash)
	}
	id, err := uuid.FromBytes(b[:16])
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// ReadInfo reads and validates the Info file at path.
func ReadInfo(path string) (Info, error) {
	var i Info
	b, err := os.ReadFile(path)
	if err != nil {
		return i, fmt.Errorf("failed to read the system image's info: %w", err)
	}
	if err := json.Unmarshal(b, &i); err != nil {
		return i, fmt.Errorf("system image info %s: %w", path, err)
	}
	if err := i.Validate(); err != nil {
		return i, fmt.Errorf("system image info %s: %w", path, err)
	}
	return i, nil
}
