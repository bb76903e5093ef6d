// Command boot boots the appliance's disk image in QEMU, through UEFI
// firmware, with its serial console on the terminal: `bazel run
// //images/appliance:boot`. The image is never written (a temporary
// copy-on-write layer takes the writes). TCG by default; KVM only
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
	flag.Parse()
	ports, err := parsePorts(*forward)
	if err != nil {
		fmt.Fprintln(os.Stderr, "boot: -forward:", err)
		os.Exit(2)
	}
	if err := run(*disk, *accel, *memory, *cpus, *serial, ports); err != nil {
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

func run(disk, accel string, memory, cpus int, serial string, forward []int) error {
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
	vm, err := launch.Start(ctx, launch.Options{
		Disk: disk, Accel: accel,
		MemoryMiB: memory, CPUs: cpus, SerialLog: serial, Console: os.Stdout,
		Forward: forward, Timeout: 24 * time.Hour,
	})
	if err != nil {
		return err
	}
	defer vm.Kill()
	fmt.Fprintf(os.Stderr, "boot: QEMU started (accel %s); Ctrl-C powers the appliance off\n", vm.Accel)
	for _, p := range forward {
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
