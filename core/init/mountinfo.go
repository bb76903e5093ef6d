package main

import (
	"bufio"
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// mountsBelow returns the mount points in a /proc/self/mountinfo text that
// are dir or below it, in the order they can be unmounted: deepest first, and
// of equal depth the last mounted first (a stacked mount hides the one under
// it; each is listed once per mount).
func mountsBelow(mountinfo []byte, dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	var points []string
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 5 {
			return nil, fmt.Errorf("mountinfo line %d has %d fields, want at least 5: %q", n, len(f), sc.Text())
		}
		p, err := unescapeMountinfo(f[4])
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("failed to read mountinfo: %w", err)
	}
	slices.Reverse(points)
	slices.SortStableFunc(points, func(a, b string) int {
		return strings.Count(b, "/") - strings.Count(a, "/")
	})
	return points, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in a mountinfo path.
func unescapeMountinfo(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("truncated escape in path %q", s)
		}
		c, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape %q in path %q: %w", s[i:i+4], s, err)
		}
		b.WriteByte(byte(c))
		i += 3
	}
	return b.String(), nil
}
