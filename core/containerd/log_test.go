package containerd

import (
	"encoding/json"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// A containerd line keeps its level, except the benign errors, each
// lowered to its level (the same message with another cause is not).
func TestLogLineLevels(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	logger := zap.New(core)
	LogLine(logger, "stderr", []byte(`{"level":"info","msg":"loading plugin","time":"x"}`))
	LogLine(logger, "stderr", []byte(`{"level":"error","msg":"failed to create shim task","error":"OCI runtime create failed"}`))
	want := []zapcore.Level{zapcore.InfoLevel, zapcore.ErrorLevel}
	for _, b := range BenignErrors() {
		if b.Level >= zapcore.ErrorLevel {
			t.Errorf("benign error %q is logged at %v", b.Msg, b.Level)
		}
		line, err := json.Marshal(map[string]any{"level": "error", "msg": b.Msg + "2ecaa51c", "error": "cause: " + b.Err})
		if err != nil {
			t.Fatal(err)
		}
		LogLine(logger, "stderr", line)
		want = append(want, b.Level)
	}
	// The same message with another cause keeps its level.
	LogLine(logger, "stderr", []byte(`{"level":"error","msg":"failed to delete task","error":"permission denied"}`))
	want = append(want, zapcore.ErrorLevel)
	entries := logs.AllUntimed()
	if len(entries) != len(want) {
		t.Fatalf("%d entries, want %d", len(entries), len(want))
	}
	for i, e := range entries {
		if e.Level != want[i] {
			t.Errorf("entry %d (%q) at %v, want %v", i, e.Message, e.Level, want[i])
		}
	}
}
