package kmod

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"
)

// The modules.dep of the appliance's kernel, as the kmods tool writes it.
const modulesDep = `kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/fs/overlayfs/overlay.ko:
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/core/failover.ko:
kernel/net/llc/llc.ko:
`

func writeDeps(t *testing.T, content string) *Deps {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := ReadDeps(dir)
	if err != nil {
		t.Fatalf("ReadDeps: %v", err)
	}
	return d
}

func TestOrderLoadsDependenciesFirstAndOnce(t *testing.T) {
	d := writeDeps(t, modulesDep)
	got, err := d.Order([]string{"br_netfilter", "bridge", "overlay", "virtio-net"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/net/llc/llc.ko",
		"kernel/net/802/stp.ko",
		"kernel/net/bridge/bridge.ko",
		"kernel/net/bridge/br_netfilter.ko",
		"kernel/fs/overlayfs/overlay.ko",
		"kernel/net/core/failover.ko",
		"kernel/drivers/net/net_failover.ko",
		"kernel/drivers/net/virtio_net.ko",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Order =\n%v\nwant\n%v", got, want)
	}
}

func TestUnknownModulesAreNamed(t *testing.T) {
	d := writeDeps(t, modulesDep)
	if _, err := d.Order([]string{"nope"}); err == nil || !strings.Contains(err.Error(), "module nope is not in") {
		t.Fatalf("Order(nope) = %v, want an error naming nope", err)
	}
	d = writeDeps(t, "kernel/a.ko: kernel/b.ko\n")
	if _, err := d.Order([]string{"a"}); err == nil || !strings.Contains(err.Error(), "depends on kernel/b.ko") {
		t.Fatalf("Order(a) = %v, want an error naming the missing dependency", err)
	}
}

func TestMalformedModulesDepIsAnError(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte("kernel/a.ko kernel/b.ko\n"), 0o644)
	if _, err := ReadDeps(dir); err == nil || !strings.Contains(err.Error(), "modules.dep:1: no colon") {
		t.Fatalf("ReadDeps = %v, want a line-numbered error", err)
	}
}

func TestReadLoadList(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "b.conf"), []byte("# net\nbridge\n\nveth\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "a.conf"), []byte("overlay\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "ignored.txt"), []byte("nope\n"), 0o644)
	got, err := ReadLoadList(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"overlay", "bridge", "veth"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ReadLoadList = %v, want %v", got, want)
	}
}

// dm-verity's line lists dm-mod before dm-bufio, which itself needs dm-mod:
// the order follows each dependency's own line, so dm-mod loads first.
func TestOrderFollowsEachDependencysOwnLine(t *testing.T) {
	d := writeDeps(t, `kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko
kernel/drivers/md/dm-mod.ko:
kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-mod.ko kernel/drivers/md/dm-bufio.ko kernel/lib/reed_solomon/reed_solomon.ko
kernel/lib/reed_solomon/reed_solomon.ko:
`)
	got, err := d.Order([]string{"dm_verity"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/lib/reed_solomon/reed_solomon.ko",
		"kernel/drivers/md/dm-mod.ko",
		"kernel/drivers/md/dm-bufio.ko",
		"kernel/drivers/md/dm-verity.ko",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Order =\n%v\nwant\n%v", got, want)
	}
}

func TestDependencyCycleIsAnError(t *testing.T) {
	d := writeDeps(t, "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n")
	if _, err := d.Order([]string{"a"}); err == nil || !strings.Contains(err.Error(), "depends on itself") {
		t.Fatalf("Order(a) = %v, want a cycle error", err)
	}
}

// A module that fails does not stop the others; its dependents are not
// tried, and the error names each module with its reason. The module files
// do not exist, so nothing reaches the kernel.
func TestLoadGoesOnAfterAFailure(t *testing.T) {
	d := writeDeps(t, "kernel/fs/erofs/erofs.ko:\nkernel/x/needs_erofs.ko: kernel/fs/erofs/erofs.ko\nkernel/net/veth.ko:\n")
	order, err := d.Order([]string{"needs_erofs", "veth"})
	if err != nil {
		t.Fatal(err)
	}
	err = d.Load(context.Background(), zaptest.NewLogger(t), order)
	erofs := Failure(err, "erofs")
	if erofs == nil || !strings.Contains(erofs.Error(), "module erofs failed to load: failed to open "+filepath.Join(d.dir, "kernel/fs/erofs/erofs.ko")) {
		t.Errorf("Failure(erofs) = %v, want its open error", erofs)
	}
	if dep := Failure(err, "needs_erofs"); dep == nil || !strings.Contains(dep.Error(), "it needs module erofs, which failed to load") {
		t.Errorf("Failure(needs_erofs) = %v, want the failed dependency named", dep)
	}
	// veth was still tried after erofs failed: its own file is missing.
	if veth := Failure(err, "veth"); veth == nil || !strings.Contains(veth.Error(), "veth.ko") {
		t.Errorf("Failure(veth) = %v, want veth tried after erofs failed", veth)
	}
	if Failure(err, "overlay") != nil || Failure(nil, "erofs") != nil {
		t.Error("Failure names a module that did not fail")
	}
	rest := Without(err, "erofs")
	if Failure(rest, "erofs") != nil || Failure(rest, "veth") == nil || Failure(rest, "needs_erofs") == nil {
		t.Errorf("Without(erofs) = %v, want the others' failures only", rest)
	}
	if only := Without(errors.Join(Failure(err, "erofs")), "erofs"); only != nil {
		t.Errorf("Without of erofs alone = %v, want nil", only)
	}
}

func TestBlacklisted(t *testing.T) {
	for _, c := range []struct {
		cmdline, module string
		want            bool
	}{
		{"console=ttyS0 module_blacklist=erofs quiet", "erofs", true},
		{"module_blacklist=loop,erofs", "erofs", true},
		{"module_blacklist=erofsx", "erofs", false},
		{"module_blacklist=dm-mod", "dm_mod", false}, // the kernel compares as written
		{"erofs", "erofs", false},
		{"", "erofs", false},
	} {
		if got := Blacklisted(c.cmdline, c.module); got != c.want {
			t.Errorf("Blacklisted(%q, %q) = %v, want %v", c.cmdline, c.module, got, c.want)
		}
	}
}
