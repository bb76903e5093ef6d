// Command boot boots the appliance in QEMU with its serial console on the
// terminal: `bazel run //images/appliance:boot`. TCG by default; KVM only
// when a probe boot shows it works (or -accel=kvm). Ctrl-C powers the
// appliance off through its ACPI power button, a second Ctrl-C kills QEMU.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bazelbuild/rules_go/go/runfiles"

	"github.com/appliance-bundler/appliance/tests/launch"
)

func main() {
	kernel := flag.String("kernel", "", "kernel (rlocation path)")
	initramfs := flag.String("initramfs", "", "initramfs (rlocation path)")
	accel := flag.String("accel", "auto", "tcg, kvm or auto")
	memory := flag.Int("memory", 2048, "memory in MiB")
	cpus := flag.Int("cpus", 2, "virtual CPUs")
	serial := flag.String("serial_log", "", "also write the serial console to this file")
	flag.Parse()
	if err := run(*kernel, *initramfs, *accel, *memory, *cpus, *serial); err != nil {
		fmt.Fprintln(os.Stderr, "boot:", err)
		os.Exit(1)
	}
}

func run(kernel, initramfs, accel string, memory, cpus int, serial string) error {
	var err error
	if kernel, err = runfiles.Rlocation(kernel); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	if initramfs, err = runfiles.Rlocation(initramfs); err != nil {
		return fmt.Errorf("initramfs: %w", err)
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
		Kernel: kernel, Initramfs: initramfs, Accel: accel,
		MemoryMiB: memory, CPUs: cpus, SerialLog: serial, Console: os.Stdout,
		Timeout: 24 * time.Hour,
	})
	if err != nil {
		return err
	}
	defer vm.Kill()
	fmt.Fprintf(os.Stderr, "boot: QEMU started (accel %s); Ctrl-C powers the appliance off\n", vm.Accel)
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
