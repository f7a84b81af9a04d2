package api

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Levels Firecracker has and slog does not.
const (
	levelTrace = slog.LevelDebug - 4
	levelOff   = slog.Level(1 << 30) // above anything ever logged
)

// ParseLevel maps a Firecracker log level name (Error, Warning or Warn,
// Info, Debug, Trace, Off; in any case) to a slog level.
func ParseLevel(name string) (slog.Level, error) {
	switch strings.ToLower(name) {
	case "error":
		return slog.LevelError, nil
	case "warning", "warn":
		return slog.LevelWarn, nil
	case "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "trace":
		return levelTrace, nil
	case "off":
		return levelOff, nil
	}
	return 0, fmt.Errorf("invalid log level %q (want Error, Warning, Info, Debug, Trace or Off)", name)
}

// logFormat is the logger's current settings; PUT /logger changes the
// fields it names and keeps the others, as Firecracker does.
type logFormat struct {
	out        io.Writer
	file       *sink // out, when it is a file PUT /logger opened
	level      slog.Level
	showLevel  bool
	showOrigin bool
}

// logger returns the text logger f describes: level and source shown or
// not, Firecracker's Trace level spelled TRACE.
func (f logFormat) logger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: f.level, AddSource: f.showOrigin}
	opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		// The record's level, not an attribute that a caller named
		// "level" (of another type).
		l, ok := a.Value.Any().(slog.Level)
		if len(groups) > 0 || a.Key != slog.LevelKey || !ok {
			return a
		}
		if !f.showLevel {
			return slog.Attr{}
		}
		if l < slog.LevelDebug {
			return slog.String(slog.LevelKey, "TRACE")
		}
		return a
	}
	return slog.New(slog.NewTextHandler(f.out, opts))
}

// check refuses a PUT /logger body that apply would not take.
func (l Logger) check() error {
	if l.Level != nil {
		if _, err := ParseLevel(*l.Level); err != nil {
			return bodyError("%v", err)
		}
	}
	if l.Module != nil {
		return fmt.Errorf("Logger error: filtering by module is not supported")
	}
	return nil
}

// open opens the file a checked PUT /logger body names, if any, counting
// the lines it drops in d.
func (l Logger) open(d *drops) (*sink, error) {
	if l.LogPath == nil {
		return nil, nil
	}
	s, err := openSink(*l.LogPath, d)
	if err != nil {
		return nil, fmt.Errorf("Logger error: %w", err)
	}
	return s, nil
}

// apply returns f changed by a checked PUT /logger body, writing to file
// (from l.open) if the body names one.
func (f logFormat) apply(l Logger, file *sink) logFormat {
	f.level = slog.LevelInfo
	if l.Level != nil {
		f.level, _ = ParseLevel(*l.Level) // checked
	}
	if l.ShowLevel != nil {
		f.showLevel = *l.ShowLevel
	}
	if l.ShowLogOrigin != nil {
		f.showOrigin = *l.ShowLogOrigin
	}
	if file != nil {
		f.out, f.file = file, file
	}
	return f
}
