// Package disklayout is the appliance disk's partition layout, the contract
// between the build, which writes the disk image (build/appliance's
// mkdisk), and init, which finds its partitions at boot and adds the data
// partition at first boot: partition names, type GUIDs, alignment, and how
// the image's GUIDs are derived so that the same inputs give the same disk.
//
// The layout is GPT with 512-byte sectors:
//
//  1. "esp": the EFI system partition (FAT32), holding systemd-boot at
//     LoaderPath, its configuration at LoaderConfPath, and a Unified Kernel
//     Image for each system slot in EntryDir (EntryName);
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
	"strconv"
	"strings"

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
	// LoaderPath is the removable-media boot path of x86-64 firmware,
	// where systemd-boot is: no firmware boot entry is needed.
	LoaderPath = "/EFI/BOOT/BOOTX64.EFI"
	// LoaderConfPath is systemd-boot's configuration.
	LoaderConfPath = "/loader/loader.conf"
	// LoaderConf boots the default entry at once, with no editor of the
	// command line (it would bypass the UKI's) and no entries of its own.
	LoaderConf = "timeout 0\neditor no\nauto-entries no\nauto-firmware no\n"
	// EntryDir holds the UKIs: the Boot Loader Specification's type #2
	// entries, which systemd-boot finds without a configuration of each.
	EntryDir = "/EFI/Linux"
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

// entryPrefix starts every UKI's file name in EntryDir.
const entryPrefix = "appliance-"

// Entry is a UKI's file name in EntryDir: the version of the system it
// boots and its boot counter (the Boot Loader Specification's automatic
// boot assessment). systemd-boot picks the newest entry that has tries
// left, decrements an entry's TriesLeft each time it boots it, and puts an
// entry with none left after every other: the entry of a system being
// tried has a counter, that of a committed system has none.
type Entry struct {
	Version string
	// Counted tells whether the name has a counter; TriesLeft and
	// TriesDone are its values.
	Counted              bool
	TriesLeft, TriesDone int
}

// Name is e's file name: "appliance-<version>.efi", or with a counter
// "appliance-<version>+<left>-<done>.efi".
func (e Entry) Name() string {
	if !e.Counted {
		return entryPrefix + e.Version + ".efi"
	}
	return fmt.Sprintf("%s%s+%d-%d.efi", entryPrefix, e.Version, e.TriesLeft, e.TriesDone)
}

// Bad tells whether e was tried and has no tries left: systemd-boot boots
// it only when nothing else is there.
func (e Entry) Bad() bool { return e.Counted && e.TriesLeft == 0 }

// ParseEntry reads an entry's file name; ok is false for a name that is not
// one (another file on the ESP). The version is not checked here.
func ParseEntry(name string) (e Entry, ok bool) {
	rest, found := strings.CutPrefix(strings.ToLower(name), entryPrefix)
	if !found {
		return e, false
	}
	rest, found = strings.CutSuffix(rest, ".efi")
	if !found || rest == "" {
		return e, false
	}
	version, counter, counted := strings.Cut(rest, "+")
	e.Version = version
	if !counted {
		return e, version != ""
	}
	left, done, hasDone := strings.Cut(counter, "-")
	var err error
	if e.TriesLeft, err = strconv.Atoi(left); err != nil || e.TriesLeft < 0 {
		return e, false
	}
	if hasDone {
		if e.TriesDone, err = strconv.Atoi(done); err != nil || e.TriesDone < 0 {
			return e, false
		}
	}
	e.Counted = true
	return e, version != ""
}
