package childlog

import (
	"encoding/json"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestLineFunc(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	logger := zap.New(core)
	f := Format{Namespace: "containerd", MessageKey: "msg", Drop: []string{"time"}, Level: LevelKey("level")}
	log := f.LineFunc()
	log(logger, "stderr", []byte(`{"time":"2026-01-01T00:00:00Z","level":"info","msg":"loading plugin","id":"io.containerd.x","big":9007199254740993,"nested":{"n":1.25}}`))
	log(logger, "stderr", []byte(`{"level":"warning","msg":"w"}`))
	log(logger, "stderr", []byte(`{"level":"error","msg":"e"}`))
	log(logger, "stderr", []byte(`{"level":"fatal","msg":"f"}`))
	log(logger, "stderr", []byte(`{"level":"debug","msg":"d"}`))
	log(logger, "stdout", []byte(`time="x" level=info msg="not json"`))
	log(logger, "stderr", []byte(`{"no":"msg"}`))
	log(logger, "stderr", []byte(`{"msg":"truncated"`))
	entries := logs.AllUntimed()
	if len(entries) != 8 {
		t.Fatalf("%d entries, want 8", len(entries))
	}
	first := entries[0]
	if first.Message != "loading plugin" || first.Level != zapcore.InfoLevel {
		t.Errorf("entry 0: %q at %v", first.Message, first.Level)
	}
	b, err := json.Marshal(first.ContextMap())
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"containerd":{"big":9007199254740993,"id":"io.containerd.x","level":"info","nested":{"n":1.25}},"stream":"stderr"}`; string(b) != want {
		t.Errorf("entry 0 fields %s, want %s", b, want)
	}
	for i, want := range []zapcore.Level{zapcore.WarnLevel, zapcore.ErrorLevel, zapcore.ErrorLevel, zapcore.DebugLevel} {
		if e := entries[i+1]; e.Level != want {
			t.Errorf("entry %d (%q) at %v, want %v", i+1, e.Message, e.Level, want)
		}
	}
	for i, line := range []string{`time="x" level=info msg="not json"`, `{"no":"msg"}`, `{"msg":"truncated"`} {
		raw := entries[i+5]
		if raw.Message != "output" || raw.ContextMap()["line"] != line {
			t.Errorf("entry %d: %q %v, want the raw line %q as \"output\"", i+5, raw.Message, raw.ContextMap(), line)
		}
	}
}
