package main

import (
	"os"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// logJSONEnv names where init also writes its log as JSON lines, one
// object per entry, for machines to read (the E2E harness gives a second
// serial port, /dev/ttyS1). It is a kernel command-line parameter: the
// kernel hands a name=value parameter without a dot to init as an
// environment variable. Unset, only the console log is written.
const logJSONEnv = "appliance_log_json"

// jsonBacklog bounds what is kept for the JSON log before its device can
// be opened (PID 1 logs before it mounts /dev).
const jsonBacklog = 1 << 20

// newLogger logs to the console (stderr) for people, one line per entry:
// time, level, logger, message, then the fields as JSON; and, with
// logJSONEnv set, as JSON lines there.
func newLogger(name string) *zap.Logger {
	cfg := zap.NewProductionEncoderConfig()
	cfg.TimeKey = "ts"
	cfg.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	human := cfg
	human.EncodeLevel = zapcore.CapitalLevelEncoder
	human.ConsoleSeparator = "  "
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(human), zapcore.Lock(os.Stderr), zapcore.InfoLevel)
	if path := os.Getenv(logJSONEnv); path != "" {
		core = zapcore.NewTee(core, zapcore.NewCore(zapcore.NewJSONEncoder(cfg), &lazySink{path: path}, zapcore.InfoLevel))
	}
	return zap.New(core).Named(name)
}

// lazySink writes to the file at path once it can be opened, and keeps
// what comes before (up to jsonBacklog) to write first.
type lazySink struct {
	path string
	mu   sync.Mutex
	f    *os.File
	held []byte
}

func (s *lazySink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		// O_NOCTTY: PID 1 must not take a serial port as its terminal.
		f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|unix.O_NOCTTY, 0)
		if err != nil {
			if len(s.held)+len(p) <= jsonBacklog {
				s.held = append(s.held, p...)
			}
			return len(p), nil
		}
		s.f = f
		if _, err := f.Write(s.held); err != nil {
			return 0, err
		}
		s.held = nil
	}
	return s.f.Write(p)
}

func (s *lazySink) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	fd := int(s.f.Fd())
	if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		// A serial port: wait until the UART has sent what is queued
		// (tcdrain), or a power-off right after cuts the last lines.
		return unix.IoctlSetInt(fd, unix.TCSBRK, 1)
	}
	return s.f.Sync()
}
