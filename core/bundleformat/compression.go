package bundleformat

import (
	"fmt"
	"strings"
)

// Compression is how a bundle file is compressed, as the preseed manifest
// and the image rules' "compression" attribute spell it.
type Compression string

// The compression kinds.
const (
	None Compression = ""
	Gzip Compression = "gzip"
	Zstd Compression = "zstd"
)

// kind is one row of the compression table.
type kind struct {
	c   Compression
	ext string
}

// kinds is the one table of compression kinds and their extensions; the
// Starlark copy (build/oci/bundle_format.bzl) is generated from it.
func kinds() []kind {
	return []kind{{None, ".tar"}, {Gzip, ".tar.gz"}, {Zstd, ".tar.zst"}}
}

// Compressions lists every kind, in the table's order.
func Compressions() []Compression {
	var out []Compression
	for _, k := range kinds() {
		out = append(out, k.c)
	}
	return out
}

// Ext is the file name extension of a bundle compressed this way ("" for an
// unknown kind, which ParseCompression never returns).
func (c Compression) Ext() string {
	for _, k := range kinds() {
		if k.c == c {
			return k.ext
		}
	}
	return ""
}

// ParseCompression accepts "", "gzip" and "zstd".
func ParseCompression(s string) (Compression, error) {
	for _, k := range kinds() {
		if string(k.c) == s {
			return k.c, nil
		}
	}
	return None, fmt.Errorf("unknown bundle compression %q: want \"\", \"gzip\" or \"zstd\"", s)
}

// FromFileName tells a bundle's compression by its file name's extension;
// false for a name that is not a bundle's.
func FromFileName(name string) (Compression, bool) {
	for _, k := range kinds() {
		if strings.HasSuffix(name, k.ext) {
			return k.c, true
		}
	}
	return None, false
}
