package kubelet

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/appliance-bundler/appliance/core/childlog"
)

// BenignErrors are the errors the kubelet logs at every start in
// standalone mode (no API server, no cloud, the image filesystem on
// tmpfs, a fresh state directory, the runtime still starting), read off a
// healthy boot, and one it logs when the machine is slow: each is logged
// at its Level instead, so that the console shows an error only when
// there is one. An explicit list: any other error keeps its level.
func BenignErrors() []childlog.Benign {
	info, warn := zapcore.InfoLevel, zapcore.WarnLevel
	return []childlog.Benign{
		// No API server to get the node from.
		{Msg: "failed to check if node is newer; using informer node", Err: "", Level: info},
		// The first sync loops, before the runtime's first status and
		// the first pod lifecycle event relist.
		{Msg: "Skipping pod synchronization", Err: "container runtime status check may not have completed yet", Level: info},
		// The first image GC, before the image filesystem's stats.
		{Msg: "Image garbage collection failed once. Stats initialization may not have completed yet", Err: "invalid capacity 0 on image filesystem", Level: info},
		// A fresh state directory has no device manager checkpoint yet.
		{Msg: "Failed to read data from checkpoint", Err: "checkpoint is not found", Level: info},
		// containerd's CRI reports no separate image filesystem.
		{Msg: "eviction manager: failed to check if we have separate container filesystem. Ignoring.", Err: "no imagefs label for configured runtime", Level: info},
		// Any call the kubelet cancelled itself (gRPC's Canceled is the
		// caller's doing; a runtime that fails gives another code): the
		// calls in flight when it stops, at a power-off.
		{Msg: "", Err: "code = Canceled desc = context canceled", Level: info},
		// Events recorded while it stops, at a power-off.
		{Msg: "Unable to record event (will not retry!)", Err: "broadcaster already stopped", Level: info},
		// A housekeeping pass over 1 s: a slow or busy machine (TCG), not
		// a failure; a warning, so that it still shows.
		{Msg: "Housekeeping took longer than expected", Err: "housekeeping took too long", Level: warn},
		// Stats asked for a pod cgroup that cAdvisor has not sampled yet
		// (a pod just started on a busy machine); the next pass has them.
		{Msg: "Partial failure issuing cadvisor.ContainerInfoV2", Err: "unable to find data in memory cache", Level: warn},
	}
}

// logFormat reads the kubelet's JSON lines ({"ts":..,"caller":..,"msg":..,
// "v":0, key/values}): every key/value but ts goes under "kubelet". A line
// without "v" is an error (klog's JSON format writes the verbosity only for
// info lines), unless its message is one of BenignErrors.
func logFormat() childlog.Format {
	return childlog.Format{
		Namespace:  "kubelet",
		MessageKey: "msg",
		Drop:       []string{"ts"},
		Level:      childlog.Lowered(kubeletLevel, "err", BenignErrors()),
	}
}

// kubeletLevel: klog's JSON format writes the verbosity ("v") only for
// info lines.
func kubeletLevel(_ string, kv map[string]any) zapcore.Level {
	if _, info := kv["v"]; info {
		return zapcore.InfoLevel
	}
	return zapcore.ErrorLevel
}

// LogLine is the supervisor.LineFunc for the kubelet's output (logFormat).
func LogLine(logger *zap.Logger, stream string, line []byte) {
	logFormat().LineFunc()(logger, stream, line)
}
