// Package childlog turns the JSON log lines of the appliance's daemons
// (containerd, the kubelet) into init's own log entries: each line's
// message becomes the entry's message, its level the entry's level, and
// its other key/values fields under the daemon's name. On the console a
// daemon's line then reads like init's own, instead of a line escaped
// inside another; the JSON log keeps every key.
//
// It must not drop or rewrite a key/value, nor change a level, beyond what
// a Format says; a line that is not JSON is logged as it is.
package childlog

import (
	"bytes"
	"encoding/json"
	"slices"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/appliance-bundler/appliance/core/supervisor"
)

// Format says how to read one daemon's JSON lines.
type Format struct {
	// Namespace holds the line's key/values in the entry, so that none of
	// them collides with init's own keys (ts, level, msg, ...).
	Namespace string
	// MessageKey is the key of the message ("msg").
	MessageKey string
	// Drop are keys left out: the daemon's own timestamp, which the entry
	// has already.
	Drop []string
	// Level gives the level of a line from its key/values (the message
	// and the dropped keys included).
	Level func(msg string, kv map[string]any) zapcore.Level
}

// LineFunc is the supervisor.LineFunc of f: a line that is a JSON object
// with a string message becomes an entry as the package doc says; any
// other line (a daemon writes some before its logging is set up) is logged
// as supervisor.LogLine does.
func (f Format) LineFunc() supervisor.LineFunc {
	return func(logger *zap.Logger, stream string, line []byte) {
		kv, msg, ok := parse(line, f.MessageKey)
		if !ok {
			supervisor.LogLine(logger, stream, line)
			return
		}
		level := f.Level(msg, kv)
		for _, k := range f.Drop {
			delete(kv, k)
		}
		fields := make([]zap.Field, 0, len(kv)+2)
		fields = append(fields, zap.String("stream", stream), zap.Namespace(f.Namespace))
		keys := make([]string, 0, len(kv))
		for k := range kv {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fields = append(fields, field(k, kv[k]))
		}
		logger.Log(level, msg, fields...)
	}
}

// parse splits a JSON log line into its message and its other key/values;
// ok is false for a line that is not a JSON object with a string message.
func parse(line []byte, msgKey string) (kv map[string]any, msg string, ok bool) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return nil, "", false
	}
	d := json.NewDecoder(bytes.NewReader(line))
	// Numbers stay as written: a large int64 or an exact float is not
	// rounded through float64.
	d.UseNumber()
	if err := d.Decode(&kv); err != nil || d.More() {
		return nil, "", false
	}
	msg, ok = kv[msgKey].(string)
	if !ok {
		return nil, "", false
	}
	delete(kv, msgKey)
	return kv, msg, true
}

// field makes a zap field of a JSON value; a number stays a number (zap
// would log a json.Number as a string). Nested numbers are encoded by
// encoding/json, which writes a json.Number as the number it is.
func field(key string, v any) zap.Field {
	n, ok := v.(json.Number)
	if !ok {
		return zap.Any(key, v)
	}
	if i, err := n.Int64(); err == nil {
		return zap.Int64(key, i)
	}
	if f, err := n.Float64(); err == nil {
		return zap.Float64(key, f)
	}
	return zap.String(key, n.String())
}

// LevelKey is a Format.Level for daemons that write their level under key
// as logrus names it (containerd: "debug", "info", "warning", "error",
// "fatal", "panic"); an unknown or missing level is info.
func LevelKey(key string) func(string, map[string]any) zapcore.Level {
	return func(_ string, kv map[string]any) zapcore.Level {
		s, _ := kv[key].(string)
		switch s {
		case "debug", "trace":
			return zapcore.DebugLevel
		case "warning", "warn":
			return zapcore.WarnLevel
		case "error":
			return zapcore.ErrorLevel
		case "fatal", "panic":
			// Fatal or panic in a child must not end init.
			return zapcore.ErrorLevel
		}
		return zapcore.InfoLevel
	}
}
