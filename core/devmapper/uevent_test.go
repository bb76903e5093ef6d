package devmapper

import (
	"strings"
	"testing"
)

func uevent(header string, fields ...string) []byte {
	return []byte(header + "\x00" + strings.Join(fields, "\x00") + "\x00")
}

// A dm device's resume, as the kernel sends it: ACTION, DEVPATH and the
// DM_ variables.
func TestParseUeventOfADMResume(t *testing.T) {
	b := uevent("change@/devices/virtual/block/dm-3",
		"ACTION=change", "DEVPATH=/devices/virtual/block/dm-3", "SUBSYSTEM=block",
		"DM_COOKIE=0", "DM_NAME=containerd-erofs-ab", "MAJOR=253", "MINOR=3",
		"DEVNAME=dm-3", "DEVTYPE=disk", "DISKSEQ=12", "SEQNUM=2345")
	ev, err := ParseUevent(b)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Action != "change" || ev.DevPath != "/devices/virtual/block/dm-3" || ev.Env["DM_NAME"] != "containerd-erofs-ab" || ev.Env["SEQNUM"] != "2345" {
		t.Fatalf("ParseUevent = %+v", ev)
	}
	if got := ev.dmDevice(); got != "dm-3" {
		t.Fatalf("dmDevice = %q, want dm-3", got)
	}
}

func TestUeventsOfOtherDevicesAreNotDM(t *testing.T) {
	for _, b := range [][]byte{
		uevent("add@/devices/virtual/block/loop0", "ACTION=add", "DEVPATH=/devices/virtual/block/loop0", "SUBSYSTEM=block", "DEVNAME=loop0"),
		uevent("add@/module/dm_mod", "ACTION=add", "DEVPATH=/module/dm_mod", "SUBSYSTEM=module"),
		uevent("add@/devices/virtual/misc/device-mapper", "ACTION=add", "DEVPATH=/devices/virtual/misc/device-mapper", "SUBSYSTEM=misc", "DEVNAME=mapper/control"),
	} {
		ev, err := ParseUevent(b)
		if err != nil {
			t.Fatal(err)
		}
		if got := ev.dmDevice(); got != "" {
			t.Errorf("dmDevice of %s = %q, want none", ev.DevPath, got)
		}
	}
}

func TestMalformedUeventsAreErrors(t *testing.T) {
	for _, c := range []struct {
		b    []byte
		want string
	}{
		{[]byte("libudev\x00\xfe\xed\xca\xfe"), "from udev"},
		{uevent("add", "ACTION=add"), "not action@devpath"},
		{uevent("@/devices/x", "ACTION=", "DEVPATH=/devices/x"), "not action@devpath"},
		{uevent("add@/devices/x", "ACTION=add", "DEVPATH=/devices/x", "NOEQUALS"), `field "NOEQUALS" is not KEY=VALUE`},
		{uevent("add@/devices/x", "ACTION=remove", "DEVPATH=/devices/x"), "disagree with the header"},
		{uevent("add@/devices/x", "ACTION=add"), "disagree with the header"},
		{nil, "not action@devpath"},
	} {
		if _, err := ParseUevent(c.b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseUevent(%q) = %v, want an error with %q", c.b, err, c.want)
		}
	}
}
