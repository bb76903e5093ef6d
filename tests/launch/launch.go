// Package launch boots the appliance under QEMU for tests and for
// `bazel run`: the disk image from the build, through UEFI firmware (OVMF,
// pinned by //third_party/uefi) as a machine boots it, over a temporary
// copy-on-write layer so that the build's image is never written; TCG or
// KVM (KVM only where
// a probe boot shows it works), the serial console captured to a file and
// streamed line by line, guest TCP ports forwarded to free ports on
// 127.0.0.1, user networking with restrict=on (no route out of the VM), a
// QMP socket for the ACPI power button, a hard timeout, and QEMU killed on
// every exit path (including the death of the calling process).
//
// It must not reach anything outside the machine, nor leave a QEMU running.
package launch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bazelbuild/rules_go/go/runfiles"

	"github.com/appliance-bundler/appliance/core/supervisor"
)

// Options describe one VM.
type Options struct {
	// QEMU is the qemu-system-x86_64 binary; default from PATH.
	QEMU string
	// Disk is the appliance's disk image (raw), booted through the
	// firmware. It is never written: the VM boots a sparse copy of it,
	// grown to DiskSize (State).
	Disk string
	// State is the VM's disk: made from Disk at the first Start, kept, and
	// booted as it is by a later Start (the data partition made at first
	// boot is found again). Empty: a temporary copy, removed when QEMU
	// exits.
	State string
	// DiskSize is the size of the VM's disk in bytes (default
	// DefaultDiskSize); a State smaller than it is grown, sparse.
	DiskSize int64
	// Append is added to the kernel command line: the UKI's stub appends
	// the SMBIOS string io.systemd.stub.kernel-cmdline-extra to its own.
	Append string
	// MemoryMiB and CPUs size the VM (defaults 2048 and 2).
	MemoryMiB, CPUs int
	// Accel is "tcg", "kvm" or "auto" (default: KVM if ProbeKVM says it
	// works, else TCG).
	Accel string
	// Forward lists guest TCP ports to reach from the host; VM.Ports maps
	// each to a free port on 127.0.0.1 chosen at start.
	Forward []int
	// SerialLog is the file the serial console (ttyS0: the kernel's lines
	// and init's log for people) is written to (required). init's log as
	// JSON lines, from a second serial port (ttyS1), goes to SerialLog +
	// ".json".
	SerialLog string
	// Console, if set, also receives every serial line (e.g. os.Stdout or a
	// test's log).
	Console io.Writer
	// Timeout is a hard limit on the VM's life (default 10 minutes).
	Timeout time.Duration
	// Reboot lets the guest reboot: the machine resets and the firmware
	// boots the disk again, in the same QEMU. Default: a reboot (or a
	// kernel panic) ends QEMU.
	Reboot bool
	// GuestForward maps a guest address ("10.0.2.100:80") to a host
	// address ("127.0.0.1:8000"): each connection the guest makes to the
	// first reaches the second (QEMU's guestfwd, through the relay
	// command in this library's runfiles). Nothing else leaves the VM.
	GuestForward map[string]string
}

// VM is a running QEMU.
type VM struct {
	// Ports maps each forwarded guest port to its port on 127.0.0.1.
	Ports map[int]int
	// Accel is the accelerator in use.
	Accel string
	// Started is when QEMU was started.
	Started time.Time

	cmd     *exec.Cmd
	qmpPath string
	dir     string
	cancel  context.CancelFunc
	exited  chan struct{}
	waitErr error

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every new line
}

// relayPath is the relay's runfiles path (tests/launch/relay).
const relayPath = "_main/tests/launch/relay/relay_/relay"

// jsonPort is the guest device of the second serial port, where init
// writes its log as JSON lines (core/init's appliance_log_json).
const jsonPort = "/dev/ttyS1"

// Runfiles paths of the firmware (//third_party/uefi, this library's data).
const (
	ovmfCode = "ovmf/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "ovmf/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// firmware is one VM's UEFI firmware: the shared code and its own copy of
// the variable store, which the firmware writes (boot entries).
type firmware struct{ code, vars string }

// newFirmware finds the firmware in the runfiles and copies the variable
// store's template into dir.
func newFirmware(dir string) (firmware, error) {
	code, err := runfiles.Rlocation(ovmfCode)
	if err != nil {
		return firmware{}, fmt.Errorf("launch: the firmware %s: %w", ovmfCode, err)
	}
	tmpl, err := runfiles.Rlocation(ovmfVars)
	if err != nil {
		return firmware{}, fmt.Errorf("launch: the firmware %s: %w", ovmfVars, err)
	}
	b, err := os.ReadFile(tmpl)
	if err != nil {
		return firmware{}, fmt.Errorf("launch: the firmware's variable store: %w", err)
	}
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	if err := os.WriteFile(vars, b, 0o600); err != nil {
		return firmware{}, fmt.Errorf("launch: failed to copy the firmware's variable store: %w", err)
	}
	return firmware{code: code, vars: vars}, nil
}

// cmdlineExtra is the SMBIOS type 11 string systemd's UEFI stub appends to
// the UKI's kernel command line (systemd-stub(7)).
const cmdlineExtra = "io.systemd.stub.kernel-cmdline-extra="

// machineArgs are the QEMU arguments of a headless appliance VM: the
// machine, its size, the firmware (code read-only, vars the VM's own copy),
// the disk (drive: QEMU -drive options, file= first) as the first virtio disk,
// kernel arguments for the stub, the serial console on stdio and no reboot
// (a kernel panic ends QEMU).
func machineArgs(accel string, memoryMiB, cpus int, fw firmware, drive, cmdline string, reboot bool) []string {
	args := []string{
		"-machine", "q35", "-accel", accel,
		"-m", strconv.Itoa(memoryMiB), "-smp", strconv.Itoa(cpus),
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + fw.code,
		"-drive", "if=pflash,format=raw,unit=1,file=" + fw.vars,
		"-drive", drive + ",format=raw,if=virtio,index=0,cache=unsafe",
		"-display", "none", "-vga", "none",
		"-serial", "stdio", "-monitor", "none",
	}
	if !reboot {
		args = append(args, "-no-reboot")
	}
	if cmdline = strings.TrimSpace(cmdline); cmdline != "" {
		// QEMU's option syntax: a comma in a value is written twice.
		args = append(args, "-smbios", "type=11,value="+strings.ReplaceAll(cmdlineExtra+cmdline, ",", ",,"))
	}
	if accel == "kvm" {
		args = append(args, "-cpu", "host")
	}
	return args
}

// holdPorts binds n free TCP ports on 127.0.0.1 and keeps them bound until
// release: a port closed before the next is picked may be handed out again,
// and two forwards on one port make QEMU fail. release is safe to call more
// than once.
func holdPorts(n int) (ports []int, release func(), err error) {
	var held []net.Listener
	release = func() {
		for _, l := range held {
			l.Close()
		}
		held = nil
	}
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			release()
			return nil, nil, fmt.Errorf("failed to find a free port: %w", err)
		}
		held = append(held, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, release, nil
}

func (o *Options) defaults() error {
	if o.QEMU == "" {
		p, err := exec.LookPath("qemu-system-x86_64")
		if err != nil {
			return fmt.Errorf("qemu-system-x86_64 not found: %w", err)
		}
		o.QEMU = p
	}
	if o.Disk == "" {
		return errors.New("launch: Disk is required")
	}
	if _, err := os.Stat(o.Disk); err != nil {
		return fmt.Errorf("launch: disk image: %w", err)
	}
	if o.SerialLog == "" {
		return errors.New("launch: SerialLog is required")
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 2048
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.DiskSize == 0 {
		o.DiskSize = DefaultDiskSize
	}
	if o.Accel == "" {
		o.Accel = "auto"
	}
	return nil
}

// Start boots a VM. The VM is killed when ctx ends, when Timeout passes, or
// when the calling process dies; call Kill or Wait to release it.
func Start(ctx context.Context, o Options) (*VM, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if o.Accel == "auto" {
		o.Accel = "tcg"
		if ProbeKVM(ctx, o.QEMU, o.Disk) {
			o.Accel = "kvm"
		}
	}
	if o.Accel != "tcg" && o.Accel != "kvm" {
		return nil, fmt.Errorf("launch: accel %q is not tcg, kvm or auto", o.Accel)
	}
	dir, err := os.MkdirTemp("", "launch")
	if err != nil {
		return nil, fmt.Errorf("failed to create a runtime directory: %w", err)
	}
	vm := &VM{Ports: make(map[int]int), Accel: o.Accel, qmpPath: filepath.Join(dir, "qmp.sock"), dir: dir,
		exited: make(chan struct{}), changed: make(chan struct{})}
	fw, err := newFirmware(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}

	hosts, releasePorts, err := holdPorts(len(o.Forward))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// Released just before QEMU binds them, or on any failure before.
	defer releasePorts()
	netdev := "user,id=net0,restrict=on"
	for i, guest := range o.Forward {
		vm.Ports[guest] = hosts[i]
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", hosts[i], guest)
	}
	if len(o.GuestForward) > 0 {
		relay, err := runfiles.Rlocation(relayPath)
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("launch: the relay %s: %w", relayPath, err)
		}
		for _, guest := range slices.Sorted(maps.Keys(o.GuestForward)) {
			netdev += fmt.Sprintf(",guestfwd=tcp:%s-cmd:%s %s", guest, relay, o.GuestForward[guest])
		}
	}
	// QEMU connects the second serial port to this socket at its start.
	jsonSock := filepath.Join(dir, "json.sock")
	jsonListener, err := net.Listen("unix", jsonSock)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("failed to listen for the JSON log: %w", err)
	}
	state := o.State
	if state == "" {
		state = filepath.Join(dir, "disk.raw")
	}
	if err := prepareState(o.Disk, state, o.DiskSize); err != nil {
		jsonListener.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	args := append(machineArgs(o.Accel, o.MemoryMiB, o.CPUs, fw, "file="+state, "appliance_log_json="+jsonPort+" "+o.Append, o.Reboot),
		"-chardev", "socket,id=jsonlog,path="+jsonSock, "-serial", "chardev:jsonlog",
		"-qmp", "unix:"+vm.qmpPath+",server=on,wait=off",
		"-netdev", netdev, "-device", "virtio-net-pci,netdev=net0",
	)

	serial, err := os.Create(o.SerialLog)
	if err != nil {
		jsonListener.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("failed to create serial log %s: %w", o.SerialLog, err)
	}
	runCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	vm.cancel = cancel
	cmd := exec.CommandContext(runCtx, o.QEMU, args...)
	// QEMU dies with the process that started it, whatever ends that; in
	// its own process group, a Ctrl-C on the terminal reaches only the
	// caller, which can press the VM's power button instead.
	supervisor.Isolate(cmd, syscall.SIGKILL)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		serial.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("failed to pipe QEMU's output: %w", err)
	}
	cmd.Stderr = cmd.Stdout
	vm.cmd = cmd
	releasePorts()
	vm.Started = time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		serial.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("failed to start %s: %w", o.QEMU, err)
	}
	jsonDone := make(chan struct{})
	go func() {
		defer close(jsonDone)
		vm.readJSON(jsonListener, o.SerialLog+".json")
	}()
	go func() {
		vm.readLines(stdout, serial, o.Console)
		vm.waitErr = cmd.Wait()
		// QEMU closed the socket, or never connected: either way the
		// JSON lines are all read once the listener is closed.
		jsonListener.Close()
		<-jsonDone
		serial.Close()
		cancel()
		os.RemoveAll(dir)
		close(vm.exited)
	}()
	return vm, nil
}

// readLines scans r's lines into the VM's lines and copies each to log and,
// if set, console.
func (vm *VM) readLines(r io.Reader, log io.Writer, console io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		// A serial port's line discipline ends lines with "\r\n".
		line := strings.TrimSuffix(sc.Text(), "\r")
		fmt.Fprintln(log, line)
		if console != nil {
			fmt.Fprintln(console, line)
		}
		vm.mu.Lock()
		vm.lines = append(vm.lines, line)
		close(vm.changed)
		vm.changed = make(chan struct{})
		vm.mu.Unlock()
	}
}

// readJSON takes QEMU's connection of the JSON serial port and reads its
// lines into the VM's lines, and into the file path.
func (vm *VM) readJSON(l net.Listener, path string) {
	f, err := os.Create(path)
	if err != nil {
		f = nil
	}
	conn, err := l.Accept()
	l.Close()
	if err == nil {
		var log io.Writer = io.Discard
		if f != nil {
			log = f
		}
		vm.readLines(conn, log, nil)
		conn.Close()
	}
	if f != nil {
		f.Close()
	}
}

// LogMessage matches a line that is one of init's structured log lines
// (JSON, from the JSON port) from the named logger with the given message.
func LogMessage(logger, msg string) func(string) bool {
	return func(line string) bool {
		var l struct{ Logger, Msg string }
		return json.Unmarshal([]byte(line), &l) == nil && l.Logger == logger && l.Msg == msg
	}
}

// ConsoleMessage matches a line of init's log for people on the console
// (core/init's newLogger: time, LEVEL, logger, message, fields), for what
// init logs before the JSON port can be opened (its early boot).
func ConsoleMessage(level, logger, msg string) func(string) bool {
	return func(line string) bool {
		return strings.Contains(line, "  "+level+"  "+logger+"  "+msg)
	}
}

// WaitForLine waits until a serial line satisfies match and returns it,
// scanning from the first line. It fails when ctx ends or QEMU exits first.
func (vm *VM) WaitForLine(ctx context.Context, what string, match func(string) bool) (string, error) {
	return vm.WaitForLineFrom(ctx, 0, what, match)
}

// WaitForLineFrom is WaitForLine scanning from line number from (0-based;
// len(vm.Lines()) taken before an action sees only what follows it).
func (vm *VM) WaitForLineFrom(ctx context.Context, from int, what string, match func(string) bool) (string, error) {
	seen := from
	for {
		vm.mu.Lock()
		lines, changed := vm.lines[seen:], vm.changed
		vm.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
		}
		seen += len(lines)
		select {
		case <-changed:
		case <-vm.exited:
			// Lines written just before the exit are already in vm.lines.
			vm.mu.Lock()
			rest := vm.lines[seen:]
			vm.mu.Unlock()
			for _, l := range rest {
				if match(l) {
					return l, nil
				}
			}
			return "", fmt.Errorf("QEMU exited (%v) before the serial console showed %s", vm.waitErr, what)
		case <-ctx.Done():
			return "", fmt.Errorf("the serial console did not show %s: %w", what, ctx.Err())
		}
	}
}

// PowerDown presses the VM's ACPI power button through QMP.
func (vm *VM) PowerDown(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", vm.qmpPath)
	if err != nil {
		return fmt.Errorf("failed to reach QMP: %w", err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	dec := json.NewDecoder(conn)
	var greeting map[string]any
	if err := dec.Decode(&greeting); err != nil {
		return fmt.Errorf("failed to read QMP greeting: %w", err)
	}
	for _, c := range []string{"qmp_capabilities", "system_powerdown"} {
		if _, err := fmt.Fprintf(conn, `{"execute":%q}`+"\n", c); err != nil {
			return fmt.Errorf("failed to send %s: %w", c, err)
		}
		for {
			var resp map[string]any
			if err := dec.Decode(&resp); err != nil {
				return fmt.Errorf("failed to read the answer to %s: %w", c, err)
			}
			if e, ok := resp["error"]; ok {
				return fmt.Errorf("QMP %s failed: %v", c, e)
			}
			if _, ok := resp["return"]; ok {
				break
			}
		}
	}
	return nil
}

// Wait waits for QEMU to exit and returns its exit error.
func (vm *VM) Wait(ctx context.Context) error {
	select {
	case <-vm.exited:
		return vm.waitErr
	case <-ctx.Done():
		return fmt.Errorf("QEMU still running: %w", ctx.Err())
	}
}

// Kill stops QEMU at once and waits for it. Safe to call more than once.
func (vm *VM) Kill() {
	vm.cancel()
	<-vm.exited
}

// Lines returns the lines of both serial ports so far, in the order they
// came: the console's (the kernel's and init's log for people) and the JSON
// port's (init's log as JSON, which LogMessage matches).
func (vm *VM) Lines() []string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return append([]string(nil), vm.lines...)
}

// probeTimeout bounds the KVM probe boot.
const probeTimeout = 20 * time.Second

// ProbeKVM tells whether KVM boots this disk: it boots it under KVM with
// no init (rdinit pointing nowhere) and watches the console: the kernel's
// panic for the missing init means KVM works; "KVM internal error" (what
// nested KVM here shows at once, while QEMU then hangs) or an early exit
// means it does not. The existence of /dev/kvm alone proves nothing.
func ProbeKVM(ctx context.Context, qemu, disk string) bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "launch-probe")
	if err != nil {
		return false
	}
	defer os.RemoveAll(dir)
	fw, err := newFirmware(dir)
	if err != nil {
		return false
	}
	args := append(machineArgs("kvm", 512, 1, fw, "file="+disk+",snapshot=on", "rdinit=/kvm-probe-no-such-init", false), "-nic", "none")
	cmd := exec.CommandContext(ctx, qemu, args...)
	supervisor.Isolate(cmd, syscall.SIGKILL)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return false
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return false
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		switch line := sc.Text(); {
		case strings.Contains(line, "KVM internal error"):
			return false
		case strings.Contains(line, "Kernel panic"):
			return true
		}
	}
	return false
}
