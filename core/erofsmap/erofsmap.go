// Package erofsmap maps between the files of an uncompressed EROFS image
// and the bytes of the image that hold their data, with go-erofs's
// DataRange: Ranges gives where a file's data lies, Locate which file holds
// a byte. The verity log uses Locate to name the file of a block dm-verity
// refused on the system partition (and, in a layer blob of the cache, the
// file of the layer); the E2E tests use Ranges to flip a byte of a chosen
// file in a built disk.
//
// It must not write: it only reads images.
package erofsmap

import (
	"errors"
	"fmt"
	"io/fs"

	erofs "github.com/erofs/go-erofs"
)

// dataRanger is what go-erofs's fs.FileInfo implements for a regular
// file's uncompressed data.
type dataRanger interface {
	DataRange() []erofs.DataRange
}

// Range is a run of a file's data in the image: Size bytes of the file
// from FileOffset lie at image byte Offset.
type Range struct {
	FileOffset int64
	Offset     int64
	Size       int64
}

// Ranges lists where the data of the regular file name of fsys (an image
// go-erofs opened) lies in the image, in file order, holes left out.
func Ranges(fsys fs.FS, name string) ([]Range, error) {
	fi, err := fs.Stat(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("failed to stat %s in the EROFS image: %w", name, err)
	}
	return ranges(fi, name)
}

func ranges(fi fs.FileInfo, name string) ([]Range, error) {
	dr, ok := fi.(dataRanger)
	if !ok || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file of an EROFS image", name)
	}
	var out []Range
	var at int64
	for _, r := range dr.DataRange() {
		if r.Device != 0 {
			return nil, fmt.Errorf("%s has data on extra device %d, which is not supported", name, r.Device)
		}
		if r.Offset >= 0 {
			out = append(out, Range{FileOffset: at, Offset: r.Offset, Size: r.Size})
		}
		at += r.Size
	}
	if at != fi.Size() && fi.Size() > 0 {
		return nil, fmt.Errorf("%s: its data ranges cover %d of %d bytes (compressed?)", name, at, fi.Size())
	}
	return out, nil
}

// ErrNotFound is Locate's error when no file's data holds the byte
// (metadata, free space, or a compressed file).
var ErrNotFound = errors.New("no file's data holds the byte")

// Location is a byte of the image in a file.
type Location struct {
	Path       string // slash-separated, relative to the image's root
	FileOffset int64
}

// Locate finds the regular file of fsys whose data holds the image's byte
// off, walking the whole tree: it is for the rare corruption report, not
// for a hot path.
func Locate(fsys fs.FS, off int64) (Location, error) {
	var found Location
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rs, err := ranges(fi, p)
		if err != nil {
			return nil // compressed or otherwise unmapped: not this one
		}
		for _, r := range rs {
			if off >= r.Offset && off < r.Offset+r.Size {
				found = Location{Path: p, FileOffset: r.FileOffset + off - r.Offset}
				return fs.SkipAll
			}
		}
		return nil
	})
	if err != nil {
		return Location{}, fmt.Errorf("failed to walk the EROFS image: %w", err)
	}
	if found.Path == "" {
		return Location{}, fmt.Errorf("byte %d: %w", off, ErrNotFound)
	}
	return found, nil
}
