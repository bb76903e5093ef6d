package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

// mountTmpfs mounts a tmpfs at p (creating it) and unmounts it, if still
// mounted, when the test ends. The test runs as root.
func mountTmpfs(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", p, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("failed to mount a tmpfs at %s (the test needs root): %v", p, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(p, unix.MNT_DETACH) })
}

func selfMountsBelow(t *testing.T, dir string) []string {
	t.Helper()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	points, err := mountsBelow(info, dir)
	if err != nil {
		t.Fatal(err)
	}
	return points
}

// mountTree mounts dir, dir/a, dir/a/b, "dir/a/b/c d" (the kernel escapes
// the space), dir/x and a sibling dir+"x" that is not below dir.
func mountTree(t *testing.T) (dir string, want []string) {
	dir = filepath.Join(t.TempDir(), "state")
	for _, p := range []string{dir, dir + "/a", dir + "/a/b", dir + "/a/b/c d", dir + "/x", dir + "x"} {
		mountTmpfs(t, p)
	}
	return dir, []string{dir + "/a/b/c d", dir + "/a/b", dir + "/x", dir + "/a", dir}
}

func TestMountsBelowDeepestFirst(t *testing.T) {
	dir, want := mountTree(t)
	if got := selfMountsBelow(t, dir); !slices.Equal(got, want) {
		t.Errorf("mountsBelow(%s) = %q, want %q", dir, got, want)
	}
	// A second mount over dir/x hides the first: it goes first.
	mountTmpfs(t, dir+"/x")
	want = slices.Insert(want, 2, dir+"/x")
	if got := selfMountsBelow(t, dir); !slices.Equal(got, want) {
		t.Errorf("with dir/x mounted twice, mountsBelow(%s) = %q, want %q", dir, got, want)
	}
}

func TestMountsBelowBadLine(t *testing.T) {
	for _, info := range []string{"36 35 98:0 /\n", `36 35 98:0 / /mnt\04 rw - ext4 /dev/vda rw`} {
		if _, err := mountsBelow([]byte(info), "/mnt"); err == nil {
			t.Errorf("mountsBelow(%q) accepted a bad line", info)
		}
	}
}

func TestReleaseMountsUnmountsAll(t *testing.T) {
	dir, _ := mountTree(t)
	releaseMounts(zaptest.NewLogger(t), dir)
	if left := selfMountsBelow(t, dir); len(left) != 0 {
		t.Errorf("mounts left below %s: %q", dir, left)
	}
	if left := selfMountsBelow(t, dir+"x"); len(left) != 1 {
		t.Errorf("the sibling %sx was touched: %q", dir, left)
	}
}

// A dir that stays busy ends up read-only: its filesystem is then clean.
func TestReleaseMountsRemountsBusyReadOnly(t *testing.T) {
	dir, _ := mountTree(t)
	busy, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	releaseMounts(zaptest.NewLogger(t), dir)
	if left := selfMountsBelow(t, dir); !slices.Equal(left, []string{dir}) {
		t.Fatalf("mounts left below %s: %q, want only the busy one", dir, left)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("busy %s is still writable (statfs flags %#x)", dir, st.Flags)
	}
}
