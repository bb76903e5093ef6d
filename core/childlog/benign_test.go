package childlog

import (
	"testing"

	"go.uber.org/zap/zapcore"
)

// Lowered changes only errors that a Benign matches: by the start of the
// message and a part of the cause under the given key.
func TestLowered(t *testing.T) {
	level := Lowered(LevelKey("level"), "error", []Benign{
		{Msg: "collecting metrics for ", Err: "ttrpc: closed", Level: zapcore.WarnLevel},
		{Msg: "", Err: "context canceled", Level: zapcore.InfoLevel},
	})
	for _, c := range []struct {
		msg  string
		kv   map[string]any
		want zapcore.Level
	}{
		{"collecting metrics for 2eca", map[string]any{"level": "error", "error": "ttrpc: closed"}, zapcore.WarnLevel},
		{"collecting metrics for 2eca", map[string]any{"level": "error", "error": "permission denied"}, zapcore.ErrorLevel},
		{"collecting metrics", map[string]any{"level": "error", "error": "ttrpc: closed"}, zapcore.ErrorLevel},
		{"any message", map[string]any{"level": "error", "error": "rpc: context canceled"}, zapcore.InfoLevel},
		{"any message", map[string]any{"level": "error", "err": "rpc: context canceled"}, zapcore.ErrorLevel},
		{"collecting metrics for 2eca", map[string]any{"level": "debug", "error": "permission denied"}, zapcore.DebugLevel},
	} {
		if got := level(c.msg, c.kv); got != c.want {
			t.Errorf("%q %v: %v, want %v", c.msg, c.kv, got, c.want)
		}
	}
}
