// Package disklayout is the appliance disk's partition layout, the contract
// between the build, which writes the disk image (build/appliance's
// mkdisk), and init, which finds its partitions at boot and adds the data
// partition at first boot: partition names, type GUIDs, alignment, and how
// the image's GUIDs are derived so that the same inputs give the same disk.
//
// The layout is GPT with 512-byte sectors:
//
//  1. "esp": the EFI system partition (FAT32), holding the Unified Kernel
//     Image at ESPBootPath;
//  2. "system-a": the system (an EROFS image with its dm-verity hash tree
//     appended);
//  3. "system-b": the same size, empty in the image: the other slot of A/B
//     updates;
//  4. "data": not in the image; init creates it over the rest of the disk at
//     first boot.
//
// Types follow the UAPI group's Discoverable Partitions Specification.
// It holds values only: it must not read or write disks.
package disklayout

import (
	"fmt"

	"github.com/google/uuid"
)

// Partition names (GPT partition labels).
const (
	ESP     = "esp"
	SystemA = "system-a"
	SystemB = "system-b"
	Data    = "data"
)

// Partition type GUIDs.
const (
	// TypeESP is the EFI System Partition.
	TypeESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	// TypeSystem is the DPS root partition of x86-64: a system slot.
	TypeSystem = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
	// TypeData is the DPS /var partition: the node's state.
	TypeData = "4D21B016-B534-45C2-A9FB-5C16E091FD2D"
)

const (
	// SectorSize is the logical sector size the image is written with.
	SectorSize = 512
	// Alignment is where every partition starts: a multiple of 1 MiB, as
	// partitioning tools do, so that it suits any physical block size.
	Alignment = 1 << 20
	// ESPBootPath is the removable-media boot path of x86-64 firmware,
	// where the UKI is: no boot entry is needed.
	ESPBootPath = "/EFI/BOOT/BOOTX64.EFI"
)

// namespace is the UUID namespace of the disk's derived GUIDs (a fixed
// random UUID of this project).
const namespace = "6b0c2a57-1f0e-4c55-9d0b-6a3f6a8f2d41"

// GUID derives the GUID of what (the disk, or a partition's name) from
// seed (the system's root hash): the same system gives the same GUIDs, a
// different one different GUIDs, with nothing random.
func GUID(seed, what string) string {
	return uuid.NewSHA1(uuid.MustParse(namespace), fmt.Appendf(nil, "%s/%s", seed, what)).String()
}

// Align rounds n bytes up to Alignment.
func Align(n int64) int64 {
	return (n + Alignment - 1) / Alignment * Alignment
}

// Layout is what the build wrote: the image's size and partitions, in
// order, and the system's root hash. The release manifest carries it.
type Layout struct {
	DiskGUID   string      `json:"disk_guid"`
	Size       int64       `json:"size"`
	Partitions []Partition `json:"partitions"`
	// SystemRootHash is the dm-verity root hash of system-a, empty when
	// the slot holds no system.
	SystemRootHash string `json:"system_root_hash,omitempty"`
}

// Partition is one partition of a Layout; Offset and Size are in bytes.
type Partition struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	GUID   string `json:"guid"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
}
