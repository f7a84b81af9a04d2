package api

import (
	"fmt"
	"io"
	"log/slog"
	"os"
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
	file       *os.File // out, when it is a file PUT /logger opened
	level      slog.Level
	showLevel  bool
	showOrigin bool
}

// logger returns the text logger f describes: level and source shown or
// not, Firecracker's Trace level spelled TRACE.
func (f logFormat) logger() *slog.Logger {
	opts := &slog.HandlerOptions{Level: f.level, AddSource: f.showOrigin}
	opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) > 0 || a.Key != slog.LevelKey {
			return a
		}
		if !f.showLevel {
			return slog.Attr{}
		}
		if a.Value.Any().(slog.Level) < slog.LevelDebug {
			return slog.String(slog.LevelKey, "TRACE")
		}
		return a
	}
	return slog.New(slog.NewTextHandler(f.out, opts))
}

// apply returns f changed by a PUT /logger body.
func (f logFormat) apply(l Logger) (logFormat, error) {
	f.level = slog.LevelInfo
	if l.Level != nil {
		level, err := ParseLevel(*l.Level)
		if err != nil {
			return f, bodyError("%v", err)
		}
		f.level = level
	}
	if l.Module != nil {
		return f, fmt.Errorf("Logger error: filtering by module is not supported")
	}
	if l.ShowLevel != nil {
		f.showLevel = *l.ShowLevel
	}
	if l.ShowLogOrigin != nil {
		f.showOrigin = *l.ShowLogOrigin
	}
	if l.LogPath != nil {
		file, err := os.OpenFile(*l.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return f, fmt.Errorf("Logger error: %w", err)
		}
		f.out, f.file = file, file
	}
	return f, nil
}
