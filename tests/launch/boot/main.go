// Command boot boots the appliance's disk image in QEMU, through UEFI
// firmware, with its serial console on the terminal: `bazel run
// //images/appliance:boot`. The image is never written: the VM boots a
// sparse copy grown to -disk_size, temporary unless -state names it (then
// a second boot with the same -state finds the data partition and the
// node's state of the first). TCG by default; KVM only
// when a probe boot shows it works (or -accel=kvm). Ctrl-C powers the
// appliance off through its ACPI power button, a second Ctrl-C kills QEMU.
// Guest ports named by -forward (default hello-web's 8080) are forwarded to
// free ports on 127.0.0.1, printed at start.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bazelbuild/rules_go/go/runfiles"

	"github.com/appliance-bundler/appliance/tests/launch"
)

func main() {
	disk := flag.String("disk", "", "the appliance's disk image (rlocation path)")
	accel := flag.String("accel", "auto", "tcg, kvm or auto")
	memory := flag.Int("memory", 2048, "memory in MiB")
	cpus := flag.Int("cpus", 2, "virtual CPUs")
	serial := flag.String("serial_log", "", "also write the serial console to this file")
	forward := flag.String("forward", "8080", "comma-separated guest TCP ports to forward to 127.0.0.1 (8080: hello-web)")
	var o launch.Options
	flag.StringVar(&o.State, "state", "", "the VM's disk, made from the image at the first boot and kept (default: a temporary copy)")
	flag.Int64Var(&o.DiskSize, "disk_size", launch.DefaultDiskSize, "the VM's disk size in bytes (sparse)")
	flag.Parse()
	ports, err := parsePorts(*forward)
	if err != nil {
		fmt.Fprintln(os.Stderr, "boot: -forward:", err)
		os.Exit(2)
	}
	o.Accel, o.MemoryMiB, o.CPUs, o.Forward = *accel, *memory, *cpus, ports
	if err := run(*disk, *serial, o); err != nil {
		fmt.Fprintln(os.Stderr, "boot:", err)
		os.Exit(1)
	}
}

// parsePorts reads a comma-separated list of TCP ports ("" is none).
func parsePorts(list string) ([]int, error) {
	var ports []int
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%q is not a TCP port", f)
		}
		ports = append(ports, p)
	}
	return ports, nil
}

func run(disk, serial string, o launch.Options) error {
	var err error
	if disk, err = runfiles.Rlocation(disk); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	if serial == "" {
		dir, err := os.MkdirTemp("", "appliance-boot")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		serial = filepath.Join(dir, "serial.log")
	}
	ctx := context.Background()
	o.Disk, o.SerialLog, o.Console, o.Timeout = disk, serial, os.Stdout, 24*time.Hour
	vm, err := launch.Start(ctx, o)
	if err != nil {
		return err
	}
	defer vm.Kill()
	fmt.Fprintf(os.Stderr, "boot: QEMU started (accel %s); Ctrl-C powers the appliance off\n", vm.Accel)
	for _, p := range o.Forward {
		fmt.Fprintf(os.Stderr, "boot: guest port %d is 127.0.0.1:%d\n", p, vm.Ports[p])
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "boot: pressing the power button")
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := vm.PowerDown(pctx); err != nil {
			fmt.Fprintln(os.Stderr, "boot:", err)
		}
		// A signal sent twice at once (to the process and to its group, as
		// timeout(1) does) is one request; only a later one kills QEMU.
		pressed := time.Now()
		for range sigs {
			if time.Since(pressed) > time.Second {
				vm.Kill()
				return
			}
		}
	}()
	return vm.Wait(ctx)
}
