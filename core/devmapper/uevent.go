package devmapper

import (
	"bytes"
	"fmt"
	"strings"
)

// Uevent is one kernel uevent: "ACTION@DEVPATH" then KEY=VALUE pairs.
type Uevent struct {
	Action  string
	DevPath string
	Env     map[string]string
}

// ParseUevent parses a kernel uevent datagram: a header "action@devpath"
// and NUL-separated KEY=VALUE fields. A datagram from udev (which starts
// "libudev") or one whose header disagrees with its ACTION or DEVPATH is an
// error.
func ParseUevent(b []byte) (Uevent, error) {
	parts := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
	header := string(parts[0])
	if header == "libudev" {
		return Uevent{}, fmt.Errorf("uevent from udev, not the kernel")
	}
	action, devpath, ok := strings.Cut(header, "@")
	if !ok || action == "" || devpath == "" {
		return Uevent{}, fmt.Errorf("uevent header %q is not action@devpath", header)
	}
	ev := Uevent{Action: action, DevPath: devpath, Env: make(map[string]string, len(parts)-1)}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(string(p), "=")
		if !ok || k == "" {
			return Uevent{}, fmt.Errorf("uevent %s: field %q is not KEY=VALUE", header, p)
		}
		ev.Env[k] = v
	}
	if ev.Env["ACTION"] != action || ev.Env["DEVPATH"] != devpath {
		return Uevent{}, fmt.Errorf("uevent %s: ACTION=%q DEVPATH=%q disagree with the header", header, ev.Env["ACTION"], ev.Env["DEVPATH"])
	}
	return ev, nil
}

// dmDevice is the kernel name (dm-N) of the dm device ev is about, or "".
func (ev Uevent) dmDevice() string {
	name := ev.Env["DEVNAME"]
	if ev.Env["SUBSYSTEM"] != "block" || !strings.HasPrefix(name, "dm-") || strings.Contains(name, "/") {
		return ""
	}
	return name
}
