// Package devmapper does for the appliance's device-mapper devices what udev
// does on a distribution, which the appliance does not run: it keeps
// /dev/mapper/<name> -> ../dm-N links for every dm device (containerd's
// erofs mount handler, through go-dmverity, creates a dm-verity device per
// mount of a layer the node converted, and waits about a second for its
// /dev/mapper link), logs the layer blob behind each device, and turns the
// kernel's dm-verity corruption lines into errors naming what is known: the
// layer (its diffID and blob path), or on the system partition the file
// that holds the block (core/erofsmap), and in a cache blob the layer's
// file too.
//
// It must not create, change or remove dm or loop devices, nor device nodes
// (devtmpfs makes those): it only maintains links in /dev/mapper and reads
// sysfs, uevents and the kernel log.
package devmapper

import (
	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"
)

const (
	// DefaultSys and DefaultDev are where sysfs and devtmpfs are mounted.
	DefaultSys = "/sys"
	DefaultDev = "/dev"
	// DefaultKmsg is the kernel log device.
	DefaultKmsg = "/dev/kmsg"
)

// Device is one dm device and the layer blob under it, as sysfs shows them.
// A dm-verity device of containerd's erofs snapshotter has one slave: a loop
// device over the blob, holding both the data and the hash tree.
type Device struct {
	Kernel string // kernel name: dm-3
	Name   string // device-mapper name: containerd-erofs-…
	Dev    string // major:minor of the dm device
	// Loop, LoopDev and BackingFile describe the first loop device under
	// it; empty when it has none.
	Loop        string
	LoopDev     string
	BackingFile string
	// DiffID is the layer's, when BackingFile is a blob of an EROFS layer
	// cache (<dir>/<algorithm>/<xx>/<hex>.erofs); empty otherwise (a layer
	// the node converted itself lies in the snapshotter's own directory).
	DiffID digest.Digest
}

// fields are d's log fields.
func (d Device) fields() []zap.Field {
	return []zap.Field{
		zap.String("name", d.Name),
		zap.String("device", d.Kernel),
		zap.String("dev", d.Dev),
		zap.String("loop", d.Loop),
		zap.String("loop_dev", d.LoopDev),
		zap.String("backing_file", d.BackingFile),
		zap.String("diff_id", d.DiffID.String()),
	}
}
