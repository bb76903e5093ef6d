package kubelet

import (
	"slices"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/appliance-bundler/appliance/core/childlog"
)

// BenignErrors are the messages the kubelet logs as errors at every start
// in standalone mode (no API server, no cloud, the image filesystem on
// tmpfs), which say nothing is wrong with the node: each is logged at info
// level instead, so that the console shows an error only when there is
// one. An explicit list: any other error keeps its level.
func BenignErrors() []string {
	return []string{
		// Standalone: there is no API server to get the node from.
		"failed to check if node is newer; using informer node",
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
			if _, info := kv["v"]; info || slices.Contains(benign, msg) {
				return zapcore.InfoLevel
			}
			return zapcore.ErrorLevel
		},
	}
}

// LogLine is the supervisor.LineFunc for the kubelet's output (logFormat).
func LogLine(logger *zap.Logger, stream string, line []byte) {
	logFormat().LineFunc()(logger, stream, line)
}
