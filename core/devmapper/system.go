package devmapper

import (
	"fmt"
	"os"
	"path"
	"path/filepath"

	erofs "github.com/erofs/go-erofs"
	"go.uber.org/zap"

	"github.com/appliance-bundler/appliance/core/erofscache"
	"github.com/appliance-bundler/appliance/core/erofsmap"
	"github.com/appliance-bundler/appliance/core/systemimage"
)

// systemFields names what a corrupted data block of the system partition
// holds: the file of the system (read through the verified dm device, whose
// metadata blocks dm-verity still checks) and its offset; for a blob of the
// layer cache, also the layer's diffID and the file of the layer. What
// cannot be found (a hash block, metadata, a corrupted directory) is a
// "locate_error" field: the line is logged either way.
func (c VerityLog) systemFields(d Device, cor corruption) []zap.Field {
	if cor.Kind != "data" {
		return nil
	}
	off := int64(cor.Block) * systemimage.BlockSize
	loc, err := locateIn(filepath.Join(c.Dev, d.Kernel), off)
	if err != nil {
		return []zap.Field{zap.NamedError("locate_error", err)}
	}
	file := "/" + loc.Path
	fields := []zap.Field{zap.String("file", file), zap.Int64("file_offset", loc.FileOffset)}
	diffID := diffIDOf(file)
	if diffID == "" || path.Dir(path.Dir(path.Dir(file))) != erofscache.Root {
		return fields
	}
	fields = append(fields, zap.String("diff_id", diffID.String()))
	inner, err := locateIn(filepath.Join(c.Root, filepath.FromSlash(file)), loc.FileOffset)
	if err != nil {
		return append(fields, zap.NamedError("locate_error", err))
	}
	return append(fields, zap.String("layer_file", "/"+inner.Path), zap.Int64("layer_file_offset", inner.FileOffset))
}

// locateIn finds the file that holds byte off of the EROFS image in the
// file or device at p.
func locateIn(p string, off int64) (erofsmap.Location, error) {
	f, err := os.Open(p)
	if err != nil {
		return erofsmap.Location{}, fmt.Errorf("failed to open %s: %w", p, err)
	}
	defer f.Close()
	fsys, err := erofs.Open(f)
	if err != nil {
		return erofsmap.Location{}, fmt.Errorf("%s holds no EROFS: %w", p, err)
	}
	loc, err := erofsmap.Locate(fsys, off)
	if err != nil {
		return erofsmap.Location{}, fmt.Errorf("%s: %w", p, err)
	}
	return loc, nil
}
