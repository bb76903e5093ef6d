package network

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// inFreshNamespaces runs fn on a thread with its own network and UTS
// namespaces, holding an uplink named eth0 (one end of a veth pair), so the
// test configures real interfaces without touching the machine's.
func inFreshNamespaces(t *testing.T, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The thread is left locked: it ends with the goroutine, and with it
		// the namespaces.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET | unix.CLONE_NEWUTS); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Errorf("failed to add veth pair: %v", err)
			return
		}
		peer, err := netlink.LinkByName("peer0")
		if err == nil {
			err = netlink.LinkSetUp(peer)
		}
		if err != nil {
			t.Errorf("failed to bring peer0 up: %v", err)
			return
		}
		fn()
	}()
	<-done
}

func TestConfigureBringsUplinkUp(t *testing.T) {
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	hosts := filepath.Join(t.TempDir(), "hosts")
	inFreshNamespaces(t, func() {
		cfg := QEMUUser("appliance-test")
		cfg.ResolvConf = resolv
		cfg.Hosts = hosts
		if err := Configure(context.Background(), zap.NewNop(), cfg); err != nil {
			t.Errorf("Configure: %v", err)
			return
		}
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			t.Errorf("eth0: %v", err)
			return
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("eth0 is not up")
		}
		addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != "10.0.2.15/24" {
			t.Errorf("eth0 addresses = %v, want 10.0.2.15/24", addrs)
		}
		routes, _ := netlink.RouteList(link, netlink.FAMILY_V4)
		foundDefault := false
		for _, r := range routes {
			if r.Gw.Equal(net.ParseIP("10.0.2.2")) && (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") {
				foundDefault = true
			}
		}
		if !foundDefault {
			t.Errorf("no default route via 10.0.2.2 in %v", routes)
		}
		lo, _ := netlink.LinkByName("lo")
		if lo == nil || lo.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("lo is not up")
		}
		var uts unix.Utsname
		unix.Uname(&uts)
		if got := unix.ByteSliceToString(uts.Nodename[:]); got != "appliance-test" {
			t.Errorf("hostname = %q", got)
		}
	})
	if data, err := os.ReadFile(hosts); err != nil || string(data) != "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\tappliance-test\n" {
		t.Errorf("hosts = %q (%v)", data, err)
	}
	data, err := os.ReadFile(resolv)
	if err != nil || string(data) != "nameserver 10.0.2.3\n" {
		t.Errorf("resolv.conf = %q (%v)", data, err)
	}
}

func TestMissingUplinkIsNamed(t *testing.T) {
	inFreshNamespaces(t, func() {
		cfg := QEMUUser("")
		cfg.Interface = "eth9"
		cfg.LinkWait = 200 * time.Millisecond
		cfg.ResolvConf = ""
		cfg.Hosts = ""
		err := Configure(context.Background(), zap.NewNop(), cfg)
		if err == nil || !strings.Contains(err.Error(), "interface eth9 did not appear") {
			t.Errorf("Configure = %v, want an error naming eth9", err)
		}
	})
}
