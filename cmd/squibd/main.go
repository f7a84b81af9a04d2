// Command squibd is the squib microVM monitor: it boots arm64 Linux guests
// on KVM (Linux) or Hypervisor.framework (macOS).
//
// Exit status of "squibd run": 0 when the guest powered off, 1 on any error,
// 2 for a command-line mistake, 3 when the guest asked for a reset (squibd
// does not reboot guests), and 128+N when stopped by signal N.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
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

commands:
  run     boot a microVM (squibd run --help for its flags)
  help    show this text
`

func main() {
	os.Exit(squibd(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// usageError marks a command-line mistake (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

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
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
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
