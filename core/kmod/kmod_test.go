package kmod

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
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
