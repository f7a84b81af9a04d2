package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/squibvm/squib/api"
)

// version is squibd's version, reported by the API.
const version = "0.1.0-dev"

// processStart approximates when the process started: package variables
// are set before main runs.
var processStart = time.Now()

// serveFlags are the flags of squibd's API mode, named as Firecracker's.
type serveFlags struct {
	sock, id, configFile string
	noAPI                bool
	level                slog.Level
}

func parseServeFlags(args []string, stderr io.Writer) (*serveFlags, error) {
	f := &serveFlags{level: slog.LevelWarn}
	fs := flag.NewFlagSet("squibd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.sock, "api-sock", "", "serve the API on the Unix socket at `path`")
	fs.StringVar(&f.id, "id", "anonymous-instance", "the microVM's `name`")
	fs.StringVar(&f.configFile, "config-file", "", "boot the microVM configured in `file` (the JSON of GET /vm/config)")
	fs.BoolVar(&f.noAPI, "no-api", false, "serve no API (needs --config-file)")
	fs.Func("level", "log `level`: Error, Warning, Info, Debug, Trace or Off (default Warning)", func(s string) (err error) {
		f.level, err = api.ParseLevel(s)
		return err
	})
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	switch {
	case f.noAPI && f.configFile == "":
		return nil, usageError{"--no-api needs --config-file"}
	case !f.noAPI && f.sock == "":
		return nil, usageError{"--api-sock is required"}
	}
	return f, nil
}

// serveCmd runs squibd as Firecracker runs: the API on a socket, the
// guest's console on stdin and stdout, logs on stderr until PUT /logger.
// It returns when the microVM ends or a signal arrives, with the exit
// status of "squibd run".
func serveCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	f, err := parseServeFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK, nil
	}
	if err != nil {
		return 0, err
	}
	ctl := api.NewController(api.Options{
		ID: f.id, Version: version, OpenHypervisor: openHypervisor,
		Console: stdout, Input: stdin, Log: stderr, LogLevel: f.level,
	})
	defer ctl.Close()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)

	var srv *api.Server
	var l net.Listener
	if !f.noAPI {
		if l, err = api.Listen(f.sock); err != nil {
			return 0, err
		}
		// Closing l removes the socket file. srv.Close closes l only once
		// Serve has taken it, which may not have happened when squibd
		// returns early, so l is closed here too, last.
		defer l.Close()
		srv = api.NewServer(ctl)
		defer srv.Close()
		wall, cpu := time.Since(processStart), cpuTime()
		ctl.RecordStartup(wall, cpu)
		ctl.Log().Info("API socket ready", "path", f.sock, "startup_us", wall.Microseconds(), "startup_cpu_us", cpu.Microseconds())
	}
	// As on Firecracker, requests wait (connections queue on the socket)
	// until the configuration file has been applied: the first answer a
	// client gets already describes the microVM the file started.
	if f.configFile != "" {
		if err := configure(ctl, f.configFile); err != nil {
			return 0, fmt.Errorf("--config-file %s: %w", f.configFile, err)
		}
	}
	if srv != nil {
		go func() {
			if err := srv.Serve(l); err != nil {
				ctl.Log().Error("API server", "err", err)
			}
		}()
	}
	select {
	case <-ctl.Done():
		outcome, err := ctl.Outcome()
		return exitStatus(outcome, err, nil)
	case sig := <-signals:
		ctl.Log().Info("stopping", "signal", sig)
		ctl.Stop()
		return exitSignaled + int(sig.(syscall.Signal)), nil
	}
}

func configure(ctl *api.Controller, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	cfg, err := api.ParseConfig(b)
	if err != nil {
		return err
	}
	return ctl.Configure(cfg)
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
