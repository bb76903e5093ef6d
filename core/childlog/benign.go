package childlog

import (
	"strings"

	"go.uber.org/zap/zapcore"
)

// Benign is one error a daemon logs that says nothing is wrong with the
// node: the start of its message ("" for any), a part of its cause (the
// line's error key) that must be there too ("" for any), so that the same
// message with another cause keeps its level, and the level it is logged
// at instead.
type Benign struct {
	Msg, Err string
	Level    zapcore.Level
}

// matches tells whether a line with message msg and cause err is b.
func (b Benign) matches(msg, err string) bool {
	return strings.HasPrefix(msg, b.Msg) && strings.Contains(err, b.Err)
}

// Lowered is level, except that a line it finds an error and that one of
// benign matches (its cause read from errKey) gets that one's level. An
// explicit list: any other error keeps its level.
func Lowered(level func(string, map[string]any) zapcore.Level, errKey string, benign []Benign) func(string, map[string]any) zapcore.Level {
	return func(msg string, kv map[string]any) zapcore.Level {
		l := level(msg, kv)
		if l < zapcore.ErrorLevel {
			return l
		}
		err, _ := kv[errKey].(string)
		for _, b := range benign {
			if b.matches(msg, err) {
				return b.Level
			}
		}
		return l
	}
}
