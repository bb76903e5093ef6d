package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/network"
	"github.com/appliance-bundler/appliance/core/systemimage"
)

const (
	hostname = "appliance"
	// rebootSignal asks PID 1 to reboot, as the supervisor's updater does
	// (every other signal but SIGCHLD powers off).
	rebootSignal = unix.SIGUSR1
	// restartDelay is the pause before a dead supervisor process is started
	// again; the supervisor does its own backoff for the runnables inside.
	restartDelay = time.Second
	// stopGrace is how long the supervisor process gets to stop its tree
	// on power-off before everything is killed.
	stopGrace = 20 * time.Second
)

// mount is one filesystem PID 1 mounts at boot.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// mounts are the kernel filesystems and the writable directories. The root
// is a tmpfs already, but /run, /tmp and /var get their own so that a
// runaway writer in one cannot fill the others.
func mounts() []mount {
	const nosuid = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	return []mount{
		{"proc", "/proc", "proc", nosuid, ""},
		{"sysfs", "/sys", "sysfs", nosuid, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666"},
		{"tmpfs", "/dev/shm", "tmpfs", nosuid, "mode=1777"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, "nsdelegate"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/var", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	}
}

// mountAll mounts every filesystem of mounts, or returns the first failure:
// a node without one of them is half-made.
func mountAll() error {
	for _, m := range mounts() {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("failed to create mount point %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("failed to mount %s (%s) at %s: %w", m.source, m.fstype, m.target, err)
		}
	}
	return nil
}

// mustBoot stops the boot when a step of early boot failed: one error line
// naming the step and the reason, then a power-off. A node must never run
// half-made (a root half-copied, a kernel filesystem missing, no machine
// ID, no network), where the same failure would surface later as
// something else, or not at all.
func mustBoot(logger *zap.Logger, step string, err error) {
	if err == nil {
		return
	}
	logger.Error("boot failed; powering off", zap.String("step", step), zap.Error(err))
	powerOff(logger, nil, "boot failed: "+step)
}

// setUpState mounts the node's state: the boot disk's data partition, made
// at first boot. It then writes the machine ID, kept there so that it lasts
// across reboots. A data partition that cannot be made or mounted stops the
// boot, as does a machine ID that cannot be written.
func setUpState(ctx context.Context, logger *zap.Logger) error {
	// persist is where state that must outlive a reboot goes, if anywhere.
	persist := ""
	if dev, err := mountDataPartition(ctx, logger); err != nil {
		return fmt.Errorf("data partition: %w", err)
	} else if dev != "" {
		logger.Info("data partition mounted", zap.String("device", dev), zap.String("target", stateDir))
		persist = stateDir
	}
	id, err := ensureMachineID(machineIDPath, persist)
	if err != nil {
		return fmt.Errorf("failed to write the machine ID: %w", err)
	}
	logger.Info("machine ID", zap.String("machine_id", id), zap.Bool("persistent", persist != ""))
	return nil
}

// pid1 never returns: the machine powers off at its end.
func pid1(logger *zap.Logger) {
	boot := time.Now()
	ctx := context.Background()
	if !slices.Contains(os.Environ(), systemEnv) {
		info, ok, err := systemOnCmdline()
		mustBoot(logger, "read the kernel command line", err)
		if !ok {
			err = fmt.Errorf("the kernel command line names no system image (%s=, %s=): this init boots only from a disk's system partition",
				systemimage.ArgRootHash, systemimage.ArgHashOffset)
		} else {
			// It returns only on failure (else it executes the system's init).
			err = switchToSystem(ctx, logger, info)
		}
		mustBoot(logger, "open the system partition", err)
	}
	mustBoot(logger, "mount the kernel filesystems", mountAll())
	// Ctrl-Alt-Del sends SIGINT to PID 1 instead of rebooting at once.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		logger.Warn("failed to route Ctrl-Alt-Del to init", zap.Error(err))
	}
	erofsUnavailable := loadModules(ctx, logger)
	mustBoot(logger, "set up the state", setUpState(ctx, logger))
	mustBoot(logger, "configure the network", network.Configure(ctx, logger, network.QEMUUser(hostname)))
	logger.Info("system up", zap.Duration("since_init_start", time.Since(boot)))

	signals := make(chan os.Signal, 16)
	signal.Notify(signals, unix.SIGCHLD, unix.SIGINT, unix.SIGTERM, unix.SIGPWR, rebootSignal)
	power := make(chan string, 1)
	go watchPowerButton(logger, power)

	restart := make(chan struct{}, 1)
	later := func() { time.AfterFunc(restartDelay, func() { restart <- struct{}{} }) }
	child := startSupervisor(logger, erofsUnavailable)
	if child == nil {
		later()
	}
	for {
		select {
		case sig := <-signals:
			switch sig {
			case unix.SIGCHLD:
				if reap(logger, child) {
					child = nil
					later()
				}
			case rebootSignal:
				shutDown(logger, child, "asked for by the updater", unix.LINUX_REBOOT_CMD_RESTART)
			default:
				powerOff(logger, child, "signal "+sig.String())
			}
		case <-restart:
			if child == nil {
				if err := killLeftovers(logger, "/proc"); err != nil {
					logger.Error("failed to stop what the dead supervisor left; starting the next one anyway", zap.Error(err))
				}
				if child = startSupervisor(logger, erofsUnavailable); child == nil {
					later()
				}
			}
		case why := <-power:
			powerOff(logger, child, why)
		}
	}
}

// startSupervisor starts init's supervisor role as a child process with the
// console as its output, telling it erofsUnavailable (loadModules). On
// failure it returns nil and is retried on the next SIGCHLD tick.
func startSupervisor(logger *zap.Logger, erofsUnavailable string) *os.Process {
	cmd := exec.Command("/proc/self/exe", superviseArg)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = []string{"PATH=/usr/bin:/usr/sbin:/bin:/sbin", "HOME=/root"}
	if erofsUnavailable != "" {
		cmd.Env = append(cmd.Env, erofsUnavailableEnv+"="+erofsUnavailable)
	}
	if v := os.Getenv(logJSONEnv); v != "" {
		cmd.Env = append(cmd.Env, logJSONEnv+"="+v)
	}
	if err := cmd.Start(); err != nil {
		logger.Error("failed to start the supervisor process", zap.Error(err))
		return nil
	}
	logger.Info("supervisor process started", zap.Int("pid", cmd.Process.Pid))
	return cmd.Process
}

// reap collects every exited child and tells whether the supervisor process
// was among them.
func reap(logger *zap.Logger, child *os.Process) bool {
	died := false
	for {
		var status unix.WaitStatus
		pid, err := unix.Wait4(-1, &status, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return died
		}
		if child != nil && pid == child.Pid {
			died = true
			logger.Error("supervisor process died; restarting it",
				zap.Int("pid", pid), zap.Int("exit_status", status.ExitStatus()), zap.String("signal", status.Signal().String()))
		}
	}
}

// Linux input event constants (linux/input-event-codes.h).
const (
	evKey    = 0x01
	keyPower = 116
)

// powerButtonWait bounds how long input devices may take to appear after
// their modules are loaded.
const powerButtonWait = 10 * time.Second

// watchPowerButton reads every input device for the ACPI power button's
// KEY_POWER press (QEMU's system_powerdown) and reports it.
func watchPowerButton(logger *zap.Logger, power chan<- string) {
	watched := make(map[string]bool)
	for deadline := time.Now().Add(powerButtonWait); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		devices, _ := filepath.Glob("/dev/input/event*")
		for _, dev := range devices {
			if !watched[dev] {
				watched[dev] = true
				go watchInput(logger, dev, power)
			}
		}
	}
	if len(watched) == 0 {
		logger.Warn("no input devices: the power button is not watched")
	}
}

func watchInput(logger *zap.Logger, dev string, power chan<- string) {
	f, err := os.Open(dev)
	if err != nil {
		logger.Warn("failed to open input device", zap.String("device", dev), zap.Error(err))
		return
	}
	defer f.Close()
	// struct input_event on 64-bit: timeval (16), type, code, value.
	var ev [24]byte
	for {
		if _, err := io.ReadFull(f, ev[:]); err != nil {
			return
		}
		typ := binary.LittleEndian.Uint16(ev[16:])
		code := binary.LittleEndian.Uint16(ev[18:])
		value := int32(binary.LittleEndian.Uint32(ev[20:]))
		if typ == evKey && code == keyPower && value == 1 {
			select {
			case power <- fmt.Sprintf("power button (%s)", dev):
			default:
			}
		}
	}
}
