package kubelet

import (
	"encoding/json"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestLogLine(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	logger := zap.New(core)
	LogLine(logger, "stderr", []byte(`{"ts":1763920000123.5,"caller":"kubelet/kubelet.go:1","msg":"SyncLoop ADD","v":0,"source":"file","pods":["default/hello-appliance"],"big":9007199254740993}`))
	LogLine(logger, "stderr", []byte(`{"ts":1.5,"caller":"x.go:2","msg":"Error syncing pod","err":"ErrImageNeverPull","pod":{"name":"hello","namespace":"default"}}`))
	LogLine(logger, "stdout", []byte(`Flag --foo has been deprecated`))
	LogLine(logger, "stderr", []byte(`{"no":"msg"}`))
	LogLine(logger, "stderr", []byte(`{"msg":"truncated"`))
	entries := logs.AllUntimed()
	if len(entries) != 5 {
		t.Fatalf("%d entries, want 5", len(entries))
	}

	info := entries[0]
	if info.Message != "SyncLoop ADD" || info.Level != zapcore.InfoLevel {
		t.Errorf("entry 0: %q at %v, want \"SyncLoop ADD\" at info", info.Message, info.Level)
	}
	b, err := json.Marshal(info.ContextMap())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"kubelet":{"big":9007199254740993,"caller":"kubelet/kubelet.go:1","pods":["default/hello-appliance"],"source":"file","ts":1763920000123.5,"v":0},"stream":"stderr"}`
	if string(b) != want {
		t.Errorf("entry 0 fields %s, want %s", b, want)
	}

	e := entries[1]
	if e.Message != "Error syncing pod" || e.Level != zapcore.ErrorLevel {
		t.Errorf("entry 1: %q at %v, want \"Error syncing pod\" at error (no v)", e.Message, e.Level)
	}
	kv, _ := e.ContextMap()["kubelet"].(map[string]any)
	if kv["err"] != "ErrImageNeverPull" || kv["pod"].(map[string]any)["name"] != "hello" {
		t.Errorf("entry 1 kubelet fields %v, want err and pod.name", kv)
	}

	for i, line := range []string{"Flag --foo has been deprecated", `{"no":"msg"}`, `{"msg":"truncated"`} {
		raw := entries[i+2]
		if raw.Message != "output" || raw.ContextMap()["line"] != line {
			t.Errorf("entry %d: %q %v, want the raw line %q as \"output\"", i+2, raw.Message, raw.ContextMap(), line)
		}
	}
}
