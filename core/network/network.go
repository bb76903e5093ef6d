// Package network brings up the appliance's host networking at boot: the
// loopback interface and one uplink with a static address and default route
// (QEMU user networking's fixed addresses by default), plus /etc/resolv.conf
// and the hostname.
//
// It must not touch pod networking (that is the CNI plugins' job) or run a
// DHCP client.
package network

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/node"
)

// Config is the static network configuration.
type Config struct {
	Hostname  string
	Interface string   // the uplink, e.g. eth0
	Address   string   // CIDR, e.g. 10.0.2.15/24
	Gateway   string   // e.g. 10.0.2.2
	DNS       []string // nameservers for /etc/resolv.conf
	// ResolvConf is where the nameservers are written.
	ResolvConf string
	// Hosts is where the hosts file (localhost and the hostname) is written;
	// the CRI copies it into every pod.
	Hosts string
	// LinkWait bounds how long the uplink may take to appear after its
	// driver module is loaded (default 10 s).
	LinkWait time.Duration
}

// QEMUUser is the configuration for QEMU's user-mode network.
func QEMUUser(hostname string) Config {
	return Config{
		Hostname:   hostname,
		Interface:  "eth0",
		Address:    "10.0.2.15/24",
		Gateway:    "10.0.2.2",
		DNS:        []string{"10.0.2.3"},
		ResolvConf: node.ResolvConf,
		Hosts:      node.Hosts,
	}
}

const defaultLinkWait = 10 * time.Second

// Configure applies cfg.
func Configure(ctx context.Context, logger *zap.Logger, cfg Config) error {
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return fmt.Errorf("failed to set hostname %q: %w", cfg.Hostname, err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("failed to find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("failed to bring lo up: %w", err)
	}

	wait := cfg.LinkWait
	if wait == 0 {
		wait = defaultLinkWait
	}
	link, err := waitForLink(ctx, cfg.Interface, wait)
	if err != nil {
		return err
	}
	addr, err := netlink.ParseAddr(cfg.Address)
	if err != nil {
		return fmt.Errorf("invalid address %q for %s: %w", cfg.Address, cfg.Interface, err)
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("failed to set address %s on %s: %w", cfg.Address, cfg.Interface, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("failed to bring %s up: %w", cfg.Interface, err)
	}
	gw := net.ParseIP(cfg.Gateway)
	if gw == nil {
		return fmt.Errorf("invalid gateway %q", cfg.Gateway)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("failed to add default route via %s: %w", cfg.Gateway, err)
	}
	if cfg.ResolvConf != "" {
		var b strings.Builder
		for _, ns := range cfg.DNS {
			fmt.Fprintf(&b, "nameserver %s\n", ns)
		}
		if err := writeFile(cfg.ResolvConf, b.String()); err != nil {
			return err
		}
	}
	if cfg.Hosts != "" {
		hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost\n"
		if cfg.Hostname != "" {
			hosts += fmt.Sprintf("127.0.1.1\t%s\n", cfg.Hostname)
		}
		if err := writeFile(cfg.Hosts, hosts); err != nil {
			return err
		}
	}
	logger.Info("network up", zap.String("interface", cfg.Interface), zap.String("address", cfg.Address), zap.String("gateway", cfg.Gateway))
	return nil
}

// writeFile writes one of the files of /etc the node makes at boot, in
// its directory on tmpfs (core/node's RuntimeEtc, made here if need be).
func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("failed to create the directory of %s: %w", path, err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

func waitForLink(ctx context.Context, name string, wait time.Duration) (netlink.Link, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		link, err := netlink.LinkByName(name)
		if err == nil {
			return link, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("interface %s did not appear within %s: %w", name, wait, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
