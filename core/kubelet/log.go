package kubelet

import (
	"bytes"
	"encoding/json"
	"slices"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/appliance-bundler/appliance/core/supervisor"
)

// logNamespace holds a kubelet line's key/values in the init's entry, so
// that none of them collides with the init's own keys (ts, level, msg, ...).
const logNamespace = "kubelet"

// LogLine is the supervisor.LineFunc for the kubelet's output. A line in the
// kubelet's JSON format ({"ts":..,"caller":..,"msg":..,"v":0, key/values})
// becomes an entry with the line's msg as its message and every other
// key/value as a field under "kubelet"; a line without "v" is an error
// (klog's JSON format writes the verbosity only for info lines). Any other
// line (the kubelet writes some before its logging is set up) is logged as
// it is, like supervisor.LogLine does.
func LogLine(logger *zap.Logger, stream string, line []byte) {
	kv, msg, ok := parseJSONLine(line)
	if !ok {
		supervisor.LogLine(logger, stream, line)
		return
	}
	fields := make([]zap.Field, 0, len(kv)+2)
	fields = append(fields, zap.String("stream", stream), zap.Namespace(logNamespace))
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fields = append(fields, field(k, kv[k]))
	}
	level := zapcore.InfoLevel
	if _, info := kv["v"]; !info {
		level = zapcore.ErrorLevel
	}
	logger.Log(level, msg, fields...)
}

// parseJSONLine splits a kubelet JSON log line into its message and its
// other key/values; ok is false for a line that is not a JSON object with a
// string msg.
func parseJSONLine(line []byte) (kv map[string]any, msg string, ok bool) {
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
	msg, ok = kv["msg"].(string)
	if !ok {
		return nil, "", false
	}
	delete(kv, "msg")
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
