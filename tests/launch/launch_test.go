package launch

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
	args := strings.Join(machineArgs("tcg", 512, 1, fw, "file=disk.raw", "a=1 b=x,y", false), " ")
	if want := "-smbios type=11,value=io.systemd.stub.kernel-cmdline-extra=a=1 b=x,,y"; !strings.Contains(args, want) {
		t.Errorf("args %q lack %q", args, want)
	}
	for _, want := range []string{"file=disk.raw,format=raw,if=virtio,index=0", "readonly=on,file=code.fd", "unit=1,file=vars.fd"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if args := strings.Join(machineArgs("tcg", 512, 1, fw, "file=disk.raw", " ", false), " "); strings.Contains(args, "-smbios") {
		t.Errorf("no kernel arguments, yet %q", args)
	}
}

// The VM's disk is a sparse copy of the image grown to the size asked; a
// second prepare keeps what the first boot wrote, and grows it if asked
// for more; the image is never written.
func TestPrepareState(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "image.raw")
	data := make([]byte, 3<<20)
	copy(data, "head")
	copy(data[2<<20:], "tail")
	if err := os.WriteFile(image, data, 0o444); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state.raw")
	if err := prepareState(image, state, 8<<20); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(state)
	if err != nil || len(got) != 8<<20 || !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[len(data):], make([]byte, 8<<20-len(data))) {
		t.Fatalf("state: %d bytes (%v), want the image grown to 8 MiB", len(got), err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(state, &st); err != nil || st.Blocks*512 > 3<<20 {
		t.Errorf("state takes %d bytes on disk, want at most the image's two data blocks (%v)", st.Blocks*512, err)
	}
	// What the VM wrote stays, and a larger size grows it.
	f, _ := os.OpenFile(state, os.O_WRONLY, 0)
	f.WriteAt([]byte("written"), 5<<20)
	f.Close()
	if err := prepareState(image, state, 16<<20); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(state)
	if len(got) != 16<<20 || string(got[5<<20:5<<20+7]) != "written" {
		t.Errorf("second prepare: %d bytes, written data %q", len(got), got[5<<20:5<<20+7])
	}
	if after, _ := os.ReadFile(image); !bytes.Equal(after, data) {
		t.Error("the image was written")
	}
}
