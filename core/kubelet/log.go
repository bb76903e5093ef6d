package kubelet

import (
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/appliance-bundler/appliance/core/childlog"
)

// BenignError is one error the kubelet logs that says nothing is wrong
// with the node: its message ("" for any), a part of its "err" that must
// be there too ("" for any), so that the same message with another cause
// keeps its level, and the level it is logged at instead.
type BenignError struct {
	Msg, Err string
	Level    zapcore.Level
}

// matches tells whether a line with message msg and key/values kv is e.
func (e BenignError) matches(msg string, kv map[string]any) bool {
	if e.Msg != "" && msg != e.Msg {
		return false
	}
	err, _ := kv["err"].(string)
	return strings.Contains(err, e.Err)
}

// BenignErrors are the errors the kubelet logs at every start in
// standalone mode (no API server, no cloud, the image filesystem on
// tmpfs, a fresh state directory, the runtime still starting), read off a
// healthy boot, and one it logs when the machine is slow: each is logged
// at its Level instead, so that the console shows an error only when
// there is one. An explicit list: any other error keeps its level.
func BenignErrors() []BenignError {
	info, warn := zapcore.InfoLevel, zapcore.WarnLevel
	return []BenignError{
		// No API server to get the node from.
		{"failed to check if node is newer; using informer node", "", info},
		// The first sync loops, before the runtime's first status and
		// the first pod lifecycle event relist.
		{"Skipping pod synchronization", "container runtime status check may not have completed yet", info},
		// The first image GC, before the image filesystem's stats.
		{"Image garbage collection failed once. Stats initialization may not have completed yet", "invalid capacity 0 on image filesystem", info},
		// A fresh state directory has no device manager checkpoint yet.
		{"Failed to read data from checkpoint", "checkpoint is not found", info},
		// containerd's CRI reports no separate image filesystem.
		{"eviction manager: failed to check if we have separate container filesystem. Ignoring.", "no imagefs label for configured runtime", info},
		// Any call the kubelet cancelled itself (gRPC's Canceled is the
		// caller's doing; a runtime that fails gives another code): the
		// calls in flight when it stops, at a power-off.
		{"", "code = Canceled desc = context canceled", info},
		// A housekeeping pass over 1 s: a slow or busy machine (TCG), not
		// a failure; a warning, so that it still shows.
		{"Housekeeping took longer than expected", "housekeeping took too long", warn},
	}
}

// logFormat reads the kubelet's JSON lines ({"ts":..,"caller":..,"msg":..,
// "v":0, key/values}): every key/value but ts goes under "kubelet". A line
// without "v" is an error (klog's JSON format writes the verbosity only for
// info lines), unless its message is one of BenignErrors.
func logFormat() childlog.Format {
	benign := BenignErrors()
	return childlog.Format{
		Namespace:  "kubelet",
		MessageKey: "msg",
		Drop:       []string{"ts"},
		Level: func(msg string, kv map[string]any) zapcore.Level {
			if _, info := kv["v"]; info {
				return zapcore.InfoLevel
			}
			for _, b := range benign {
				if b.matches(msg, kv) {
					return b.Level
				}
			}
			return zapcore.ErrorLevel
		},
	}
}

// LogLine is the supervisor.LineFunc for the kubelet's output (logFormat).
func LogLine(logger *zap.Logger, stream string, line []byte) {
	logFormat().LineFunc()(logger, stream, line)
}
