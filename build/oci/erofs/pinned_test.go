package erofs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/build/erofsmkfs/mkfstest"
	"github.com/appliance-bundler/appliance/core/erofscache"
)

// TestMain puts the pinned mkfs.erofs (//third_party/erofs-utils, given by
// mkfs_erofs_test_env) alone on PATH: every conversion of these tests runs
// the binary the build and the appliance run, never the machine's own.
func TestMain(m *testing.M) {
	os.Exit(runPinned(m))
}

func runPinned(m *testing.M) int {
	mkfs, err := mkfstest.Pinned()
	if err != nil {
		fmt.Fprintln(os.Stderr, "erofs tests:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "mkfs-erofs-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "erofs tests:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin, err := mkfs.Install(dir)
	if err == nil {
		err = os.Setenv("PATH", bin)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "erofs tests: failed to set up the pinned mkfs.erofs:", err)
		return 1
	}
	return m.Run()
}

// The pinned tool's blob of the test layer, hash tree included, and its
// root hash, as checked in: a different mkfs.erofs (another version, other
// defaults) or a change to the options or the hash tree shows up here as a
// failure, not as other bytes in a release.
const (
	pinnedBlobSHA256 = "ec754fe50c94349c71f79a26136555fbc730c78bfda679ed1fc6fd81a2eb80b6"
	pinnedRootHash   = "a998d1435d9df8c2ebc451b543c517541f56daff0782647ef12e68d2e38a7ab3"
)

func TestPinnedToolGivesTheCheckedInBlob(t *testing.T) {
	raw := testLayer(t)
	diffID := digest.FromBytes(raw)
	dir := t.TempDir()
	e := convert(t, dir, raw, descOf(ocispec.MediaTypeImageLayer, raw), diffID)
	sum := sha256.Sum256(read(t, erofscache.BlobPath(dir, diffID)))
	if got := hex.EncodeToString(sum[:]); got != pinnedBlobSHA256 || e.RootHash != pinnedRootHash {
		t.Errorf("the pinned mkfs.erofs gave a blob of sha256 %s, root hash %s; want %s, %s", got, e.RootHash, pinnedBlobSHA256, pinnedRootHash)
	}
}
