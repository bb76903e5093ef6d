// Command check runs inside the E2E's EROFS test container and checks that
// the layers (//tests/e2e/erofs/layers) came out of their EROFS blobs and
// the overlay right: the base's deleted file is gone, the opaque directory
// holds only the top layer's entry, the two hard-linked names are one
// inode, and the symlink points to its target. It prints "layers ok" and
// exits 0, or prints every problem and exits 1. It is a test tool: it must
// never be part of a shipped image.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"syscall"
)

func check(marker string) []string {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if _, err := os.Lstat("/gone"); !errors.Is(err, fs.ErrNotExist) {
		fail("/gone: want it deleted by the whiteout, got %v", err)
	}
	if names, err := dirNames("/opaque"); err != nil || !slices.Equal(names, []string{"new"}) {
		fail("/opaque: want only [new] (opaque directory), got %v %v", names, err)
	}
	var a, b syscall.Stat_t
	if err := syscall.Stat("/data", &a); err != nil {
		fail("/data: %v", err)
	} else if err := syscall.Stat("/data-link", &b); err != nil {
		fail("/data-link: %v", err)
	} else if a.Ino != b.Ino || a.Nlink != 2 {
		fail("/data and /data-link: want one inode with 2 links, got inodes %d and %d, links %d", a.Ino, b.Ino, a.Nlink)
	}
	if t, err := os.Readlink("/sym"); err != nil || t != "keep" {
		fail("/sym: want a symlink to keep, got %q %v", t, err)
	}
	if body, err := os.ReadFile("/sym"); err != nil || string(body) != "kept\n" {
		fail("/sym: want to read \"kept\", got %q %v", body, err)
	}
	if marker != "" {
		if body, err := os.ReadFile("/marker"); err != nil || string(body) != marker+"\n" {
			fail("/marker: want %q, got %q %v", marker, body, err)
		}
	}
	return problems
}

func dirNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, err
}

func main() {
	marker := flag.String("marker", "", "the content /marker must have (its layer's line); empty: no /marker check")
	flag.Parse()
	problems := check(*marker)
	for _, p := range problems {
		fmt.Println("problem:", p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Println("layers ok")
}
