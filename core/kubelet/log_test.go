package kubelet

import (
	"encoding/json"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// A kubelet line's level: info with "v", error without, except the benign
// errors of standalone mode, each of which is lowered to info (the same
// message with another cause is not); ts is not kept (the entry has its
// own time).
func TestLogLineLevels(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	logger := zap.New(core)
	LogLine(logger, "stderr", []byte(`{"ts":1.5,"caller":"k.go:1","msg":"SyncLoop ADD","v":0}`))
	LogLine(logger, "stderr", []byte(`{"ts":1.5,"caller":"x.go:2","msg":"Error syncing pod","err":"ErrImageNeverPull"}`))
	for _, b := range BenignErrors() {
		line, err := json.Marshal(map[string]any{"ts": 1.5, "caller": "x.go:3", "msg": b.Msg, "err": "cause: " + b.Err})
		if err != nil {
			t.Fatal(err)
		}
		LogLine(logger, "stderr", line)
	}
	// The same message with another cause keeps its level.
	LogLine(logger, "stderr", []byte(`{"ts":1.5,"caller":"x.go:4","msg":"Skipping pod synchronization","err":"container runtime is down"}`))
	entries := logs.AllUntimed()
	if len(entries) != 3+len(BenignErrors()) {
		t.Fatalf("%d entries, want %d", len(entries), 3+len(BenignErrors()))
	}
	want := []zapcore.Level{zapcore.InfoLevel, zapcore.ErrorLevel}
	for _, b := range BenignErrors() {
		if b.Level >= zapcore.ErrorLevel {
			t.Errorf("benign error %q is logged at %v", b.Msg, b.Level)
		}
		want = append(want, b.Level)
	}
	want = append(want, zapcore.ErrorLevel)
	for i, e := range entries {
		if e.Level != want[i] {
			t.Errorf("entry %d (%q) at %v, want %v", i, e.Message, e.Level, want[i])
		}
		kv, _ := e.ContextMap()["kubelet"].(map[string]any)
		if _, ok := kv["ts"]; ok || kv["caller"] == nil {
			t.Errorf("entry %d fields %v, want caller and no ts", i, kv)
		}
	}
}
