package main

import "testing"

func TestStateDiskFromCommandLine(t *testing.T) {
	for cmdline, want := range map[string]string{
		"console=ttyS0 panic=-1":                               "",
		"console=ttyS0 appliance.state_disk=/dev/vda panic=-1": "/dev/vda",
		"appliance.state_disk=/dev/vdb\n":                      "/dev/vdb",
		"xappliance.state_disk=/dev/vda":                       "",
	} {
		if got := stateDisk(cmdline); got != want {
			t.Errorf("stateDisk(%q) = %q, want %q", cmdline, got, want)
		}
	}
}
