package launch

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bazelbuild/rules_go/go/runfiles"
)

// TestHoldPortsGivesDistinctPortsHeldUntilRelease picks many ports at once,
// as Start does for its forwards: they must all differ and each must stay
// bound (a new listener on it fails) until release, after which it is free
// for QEMU. Closing each listener before picking the next gives duplicates
// among a few hundred picks here, and no port stays bound.
func TestHoldPortsGivesDistinctPortsHeldUntilRelease(t *testing.T) {
	const n = 500
	ports, release, err := holdPorts(n)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if len(ports) != n {
		t.Fatalf("got %d ports, want %d", len(ports), n)
	}
	seen := make(map[int]int)
	for i, p := range ports {
		if j, ok := seen[p]; ok {
			t.Errorf("port %d picked twice (picks %d and %d)", p, j, i)
		}
		seen[p] = i
	}
	free := 0
	for _, p := range ports {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			l.Close()
			free++
		}
	}
	if free > 0 {
		t.Errorf("%d of %d picked ports were no longer bound before release", free, n)
	}
	release()
	// After release the first ports are free to bind again (as QEMU does).
	for _, p := range ports[:2] {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Errorf("port %d still bound after release: %v", p, err)
			continue
		}
		l.Close()
	}
}

// The firmware is in the runfiles at the paths launch.go names, and each VM
// gets its own writable copy of the variable store, equal to the template.
func TestFirmwareFromRunfiles(t *testing.T) {
	dir := t.TempDir()
	fw, err := newFirmware(dir)
	if err != nil {
		t.Fatal(err)
	}
	code, err := os.Stat(fw.code)
	if err != nil || code.Size() == 0 {
		t.Fatalf("firmware code %s: %v", fw.code, err)
	}
	tmpl, err := runfiles.Rlocation(ovmfVars)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(fw.vars)
	if err != nil || !bytes.Equal(got, want) || filepath.Dir(fw.vars) != dir {
		t.Fatalf("variable store %s: not a copy of %s in %s (%v)", fw.vars, tmpl, dir, err)
	}
}

// Kernel arguments reach the UKI's stub as one SMBIOS string, commas
// doubled as QEMU's option syntax wants; none, no SMBIOS option.
func TestMachineArgsCmdline(t *testing.T) {
	fw := firmware{code: "code.fd", vars: "vars.fd"}
	args := strings.Join(machineArgs("tcg", 512, 1, fw, "disk.raw", "a=1 b=x,y"), " ")
	if want := "-smbios type=11,value=io.systemd.stub.kernel-cmdline-extra=a=1 b=x,,y"; !strings.Contains(args, want) {
		t.Errorf("args %q lack %q", args, want)
	}
	for _, want := range []string{"file=disk.raw,format=raw,if=virtio,index=0,snapshot=on", "readonly=on,file=code.fd", "unit=1,file=vars.fd"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if args := strings.Join(machineArgs("tcg", 512, 1, fw, "disk.raw", " "), " "); strings.Contains(args, "-smbios") {
		t.Errorf("no kernel arguments, yet %q", args)
	}
}
