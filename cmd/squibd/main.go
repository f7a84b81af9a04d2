// Command squibd is the squib microVM monitor: it boots arm64 Linux guests
// on KVM (Linux) or Hypervisor.framework (macOS), from the command line
// ("squibd run") or driven through Firecracker's API on a Unix socket
// ("squibd --api-sock PATH"), which its client commands also speak.
//
// Exit status of "squibd run" and of the API mode: 0 when the guest powered
// off, 1 on any error, 2 for a command-line mistake, 3 when the guest asked
// for a reset (squibd does not reboot guests), and 128+N when stopped by
// signal N. The client commands exit 0, 1 (with the server's fault message)
// or 2.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
)

// Exit statuses, documented in the package comment and the README.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitReset    = 3
	exitSignaled = 128
)

const usage = `usage: squibd <command> [flags]
       squibd --api-sock PATH [flags]

commands:
  run       boot a microVM (squibd run --help for its flags)
  status    show the microVM of the squibd listening on --socket PATH
  pause     pause it
  resume    resume it
  drive     --id DRIVE --path FILE: make FILE the medium of its drive DRIVE (PATCH /drives)
  snapshot  create|load --snapshot FILE --mem FILE: snapshot it, or restore a snapshot;
            describe|verify|merge: inspect, check or merge snapshot files (offline, no --socket)
  help      show this text
The client commands (status, pause, resume, drive, snapshot) take --socket PATH,
and --json to print JSON.

API mode serves Firecracker's HTTP API on a Unix socket and boots the
microVM configured through it; the guest console is on stdin and stdout.
  --api-sock PATH     the socket (created 0600; a stale one is replaced)
  --id NAME           the microVM's name (default anonymous-instance)
  --config-file FILE  boot the microVM configured in FILE (the JSON of GET /vm/config)
  --no-api            with --config-file: serve no API
  --level LEVEL       log level: Error, Warning, Info, Debug, Trace or Off (default Warning)
`

func main() {
	os.Exit(profiled(os.Getenv("SQUIB_CPUPROFILE"), func() int {
		return squibd(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	}))
}

// profiled runs f, writing a CPU profile of it to path (for go tool
// pprof) unless path is empty: squibd's SQUIB_CPUPROFILE, for finding
// where a device's time goes.
func profiled(path string, f func() int) int {
	if path == "" {
		return f()
	}
	out, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(out)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "squibd: SQUIB_CPUPROFILE: %v\n", err)
		return 1
	}
	status := f()
	pprof.StopCPUProfile()
	if err := out.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "squibd: SQUIB_CPUPROFILE: %v\n", err)
	}
	return status
}

// usageError marks a command-line mistake (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// parseFlags parses args into fs: flag.ErrHelp for -h, a usageError for a
// bad flag or a stray argument.
func parseFlags(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard) // a mistake is reported in one line, by the caller
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
		return err
	}
	if err != nil {
		return usageError{fmt.Sprintf("%v (%s -h lists its flags)", err, fs.Name())}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

func squibd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var (
		status int
		err    error
	)
	switch args[0] {
	case "run":
		status, err = runCmd(args[1:], stdin, stdout, stderr)
	case "status", "pause", "resume", "drive", "snapshot":
		status, err = clientCmd(args[0], args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		if strings.HasPrefix(args[0], "-") {
			status, err = serveCmd(args, stdin, stdout, stderr)
			break
		}
		err = usageError{fmt.Sprintf("unknown command %q (try squibd help)", args[0])}
	}
	if err != nil {
		fmt.Fprintf(stderr, "squibd: %v\n", err)
		if errors.As(err, new(usageError)) {
			return exitUsage
		}
		return exitError
	}
	return status
}
