package devmapper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/supervisor"
)

// Links is the runnable that keeps /dev/mapper/<name> links for the dm
// devices. It listens to the kernel's uevents on a netlink socket of its own,
// written here with x/sys/unix: go.mod has no maintained Go uevent library,
// and what is needed is one socket and a NUL-separated message.
type Links struct {
	Sys string // sysfs; DefaultSys if empty
	Dev string // devtmpfs; DefaultDev if empty
	// Registry, if not nil, records each device linked, for VerityLog.
	Registry *Registry
}

const (
	// uevent's kernel multicast group (udev's own messages go to group 2).
	ueventKernelGroup = 1
	// ueventRcvBuf holds a burst of uevents (every layer of every pod
	// mounting at once) without loss; a loss is recovered by a rescan.
	ueventRcvBuf = 4 << 20
	// maxUevent bounds one uevent datagram (the kernel's is 2 KiB of
	// environment plus the header).
	maxUevent = 64 << 10
)

// openUevents opens a non-blocking socket on the kernel's uevent group, as
// an *os.File so that the runtime's poller waits for it and Close ends a
// pending read.
func openUevents() (*os.File, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("failed to open a uevent socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, ueventRcvBuf); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, ueventRcvBuf)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: ueventKernelGroup}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("failed to bind the uevent socket: %w", err)
	}
	return os.NewFile(uintptr(fd), "uevent"), nil
}

// recvKernel reads one datagram into buf; fromKernel is false for one sent
// by a process (port ID not 0), which is ignored.
func recvKernel(rc syscall.RawConn, buf []byte) (n int, fromKernel bool, err error) {
	cerr := rc.Read(func(fd uintptr) bool {
		var from unix.Sockaddr
		n, from, err = unix.Recvfrom(int(fd), buf, 0)
		if errors.Is(err, unix.EAGAIN) {
			return false
		}
		nl, ok := from.(*unix.SockaddrNetlink)
		fromKernel = ok && nl.Pid == 0
		return true
	})
	if cerr != nil {
		return 0, false, cerr
	}
	return n, fromKernel, err
}

// Run links the dm devices there are, then follows uevents until ctx ends.
func (c Links) Run(ctx context.Context) error {
	if c.Sys == "" {
		c.Sys = DefaultSys
	}
	if c.Dev == "" {
		c.Dev = DefaultDev
	}
	sock, err := openUevents()
	if err != nil {
		return err
	}
	defer sock.Close()
	stop := context.AfterFunc(ctx, func() { sock.Close() })
	defer stop()
	// The socket listens before the scan: a device made in between is
	// seen twice, never missed.
	l := newLinker(c.Sys, c.Dev, supervisor.Logger(ctx), c.Registry)
	l.sync()
	l.logger.Info("following uevents for device-mapper devices", zap.Int("devices", len(l.known)), zap.String("links", l.mapper()))
	supervisor.Signal(ctx, supervisor.SignalHealthy)
	return l.follow(ctx, sock)
}

// follow handles uevents from sock until ctx ends or the socket fails.
func (l *linker) follow(ctx context.Context, sock *os.File) error {
	rc, err := sock.SyscallConn()
	if err != nil {
		return fmt.Errorf("failed to use the uevent socket: %w", err)
	}
	buf := make([]byte, maxUevent)
	for {
		n, fromKernel, err := recvKernel(rc, buf)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, unix.ENOBUFS):
			l.logger.Warn("uevents were lost; rescanning the device-mapper devices")
			l.sync()
		case err != nil:
			return fmt.Errorf("failed to read uevents: %w", err)
		case !fromKernel:
		default:
			ev, err := ParseUevent(buf[:n])
			if err != nil {
				l.logger.Warn("failed to parse a uevent", zap.Error(err))
				continue
			}
			l.handle(ev)
		}
	}
}
