package main

import "testing"

// The root tmpfs's size comes from the kernel command line; the last
// setting wins, and none leaves the kernel's default.
func TestRootSize(t *testing.T) {
	for cmdline, want := range map[string]string{
		"console=ttyS0 appliance.root_size=512M quiet":   "512M",
		"appliance.root_size=1G appliance.root_size=50%": "50%",
		"console=ttyS0 appliance.root_sizex=1G":          "",
		"":                                               "",
	} {
		if got := rootSize(cmdline); got != want {
			t.Errorf("rootSize(%q) = %q, want %q", cmdline, got, want)
		}
	}
}
