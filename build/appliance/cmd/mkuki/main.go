// Command mkuki writes a Unified Kernel Image (build/appliance/uki): the
// UEFI stub with the kernel, the initramfs, the kernel command line ending
// with the system image's kernel arguments (init boots only from a system
// partition) and an os-release. It reads only its inputs; the same inputs
// give the same bytes.
package main

import (
	"bytes"
	"debug/pe"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/appliance-bundler/appliance/build/appliance/uki"
	"github.com/appliance-bundler/appliance/core/systemimage"
)

func main() {
	var o options
	flag.StringVar(&o.stub, "stub", "", "systemd's UEFI stub (linuxx64.efi.stub)")
	flag.StringVar(&o.kernel, "kernel", "", "the kernel (an EFI-stub bzImage)")
	flag.StringVar(&o.initrd, "initrd", "", "the initramfs")
	flag.StringVar(&o.cmdline, "cmdline", "", "the kernel command line, or @FILE to read it from FILE")
	flag.StringVar(&o.osrel, "osrel", "", "the os-release file")
	flag.StringVar(&o.systemInfo, "system-info", "", "the system image's info (JSON, from mksystem): its kernel arguments end the command line")
	flag.StringVar(&o.out, "out", "", "the image to write")
	flag.Parse()
	if err := o.run(); err != nil {
		fmt.Fprintln(os.Stderr, "mkuki:", err)
		os.Exit(1)
	}
}

type options struct {
	stub, kernel, initrd, cmdline, osrel, out, systemInfo string
}

func (o options) run() error {
	for flagName, v := range map[string]string{"stub": o.stub, "kernel": o.kernel, "initrd": o.initrd, "osrel": o.osrel, "system-info": o.systemInfo, "out": o.out} {
		if v == "" {
			return fmt.Errorf("-%s is required", flagName)
		}
	}
	files := map[string][]byte{o.stub: nil, o.kernel: nil, o.initrd: nil, o.osrel: nil}
	for p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", p, err)
		}
		files[p] = b
	}
	stub, kernel, initrd, osrel := files[o.stub], files[o.kernel], files[o.initrd], files[o.osrel]
	cmdline := []byte(o.cmdline)
	if p, ok := strings.CutPrefix(o.cmdline, "@"); ok {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", p, err)
		}
		cmdline = bytes.TrimRight(b, "\n")
	}
	info, err := systemimage.ReadInfo(o.systemInfo)
	if err != nil {
		return err
	}
	cmdline = fmt.Appendf(cmdline, " %s", strings.Join(info.KernelArgs(), " "))
	// The kernel runs in place at first (its EFI entry decompresses
	// itself), so its section takes the kernel's own image size in memory.
	k, err := pe.NewFile(bytes.NewReader(kernel))
	if err != nil {
		return fmt.Errorf("kernel %s is not an EFI-stub image: %w", o.kernel, err)
	}
	kh, ok := k.OptionalHeader.(*pe.OptionalHeader64)
	if !ok {
		return fmt.Errorf("kernel %s is not a PE32+ image", o.kernel)
	}
	img, err := uki.Assemble(stub, []uki.Section{
		{Name: ".osrel", Data: osrel},
		{Name: ".cmdline", Data: cmdline},
		{Name: ".initrd", Data: initrd},
		// Last, as ukify places it: nothing follows it in memory.
		{Name: ".linux", Data: kernel, VirtualSize: kh.SizeOfImage},
	})
	if err != nil {
		return fmt.Errorf("stub %s: %w", o.stub, err)
	}
	if err := os.WriteFile(o.out, img, 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", o.out, err)
	}
	return nil
}
