// Package mkfstest gives tests the pinned mkfs.erofs that mkfs_erofs_test_env
// (//third_party/erofs-utils) puts in their runfiles, so that a test converts
// with the binary the build and the appliance run, never the machine's own.
// It is a test helper library: it must not be linked into a tool or the
// appliance.
package mkfstest

import (
	"fmt"
	"os"
	"strings"

	"github.com/appliance-bundler/appliance/build/erofsmkfs"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

// Pinned is the tool from $MKFS_EROFS, $MKFS_LOADER and $MKFS_LIBS
// (space-separated soname=rlocationpath).
func Pinned() (erofsmkfs.Mkfs, error) {
	var m erofsmkfs.Mkfs
	var err error
	if m.Binary, err = runfile.Lookup("MKFS_EROFS"); err != nil {
		return m, err
	}
	if m.Loader, err = runfile.Lookup("MKFS_LOADER"); err != nil {
		return m, err
	}
	var libs []string
	for _, l := range strings.Fields(os.Getenv("MKFS_LIBS")) {
		soname, loc, _ := strings.Cut(l, "=")
		env := "MKFS_LIB_" + soname
		if err := os.Setenv(env, loc); err != nil {
			return m, err
		}
		p, err := runfile.Lookup(env)
		if err != nil {
			return m, err
		}
		libs = append(libs, soname+"="+p)
	}
	m.Libraries, err = erofsmkfs.ParseLibraries(libs)
	if err == nil && len(libs) == 0 {
		err = fmt.Errorf("$MKFS_LIBS lists no library")
	}
	return m, err
}
