package lab

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// PageSize is the L1 kernel's page size in KiB: 4, or 16 as on Apple
// Silicon.
type PageSize int

const (
	Page4K  PageSize = 4
	Page16K PageSize = 16
)

// Command is one program run inside L1.
type Command struct {
	Name  string   // label for logs and the console markers
	Args  []string // argv inside L1, e.g. {"/squibd", "run", "--kernel", "/guest/Image"}
	Stdin string   // bytes fed to the command's stdin (none when empty)
	Want  int      // the exit status the test expects (see Run)
}

// Result is what one Command did inside L1, read from the L1 console.
type Result struct {
	Name     string
	Output   string // stdout and stderr as printed, guest console included
	Stderr   string // stderr alone
	ExitCode int    // exit status; 128+N when killed by signal N; Unfinished
}

// Unfinished is the ExitCode of a command the L1 run's timeout cut off, or
// never reached.
const Unfinished = -1

// Options describe one L1 boot.
//
// L1's root holds, besides busybox under /bin:
//
//	/squibd            Squibd(t), unless NoSquibd
//	/guest/Image       the L2 guest kernel, raw (GuestFiles.Image)
//	/guest/Image.gz    the same, gzip'd (GuestFiles.ImageGz)
//	/guest/initrd.gz   the L2 initramfs (GuestFiles.Initrd)
//	/guest/rootfs.ext4.gz  the L2 ext4 root filesystem, gzip'd
//	Files              at the paths given as keys
//
// The guest's init reads squib.test=NAME from its command line, with NAME
// one of poweroff (default), cpus, reboot, counter, workload, rng, blk,
// rootfs, diskloop, hostile, hostilenet, blkbench, vsock, net, nettap or shell; see lab/guest-init for the
// markers each prints.
type Options struct {
	PageSize PageSize          // L1 page size: Page4K (default) or Page16K
	Linux61  bool              // L1 runs Debian's Linux 6.1 (4 KiB pages), whose KVM has no SMCCC filter
	Commands []Command         // run in order, each after the previous exits
	Files    map[string]string // extra regular files: L1 path -> host path
	NoSquibd bool              // do not build and install /squibd (tests of the lab itself)
	Timeout  time.Duration     // bounds the whole L1 run; default 5 min
	Log      io.Writer         // if set, receives the L1 console live
}

// Run boots one L1 and runs opts.Commands in it, returning one Result per
// command. Everything L1 needs is built first (the first time takes
// minutes), outside the timeout. Run fails the test, with the tail of the L1
// console, if L1 does not boot, has no /dev/kvm, runs with the wrong page
// size or does not finish in time.
//
// If a command exits with another status than its Want, or the timeout cuts
// it off or it is never reached, Run logs it and runs all the commands once
// more, in a fresh L1, and returns the second run's Results. Guests under
// this much emulation (QEMU TCG running L1's KVM) have failed now and then
// in ways no rerun reproduced (a guest kernel oops, guests that stopped
// making progress); a fault of squibd's own fails both runs.
func Run(t testing.TB, opts Options) []Result {
	t.Helper()
	if opts.PageSize == 0 {
		opts.PageSize = Page4K
	}
	if opts.PageSize != Page4K && opts.PageSize != Page16K {
		t.Fatalf("lab: page size %d KiB: want 4 or 16", opts.PageSize)
	}
	if opts.Linux61 && opts.PageSize != Page4K {
		t.Fatalf("lab: the Linux 6.1 L1 has 4 KiB pages, not %d", opts.PageSize)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	script(t, "build-l1.sh")

	dir := t.TempDir()
	files := map[string]string{}
	if !opts.NoSquibd {
		files["/squibd"] = Squibd(t)
	}
	for l1, host := range opts.Files {
		files[l1] = host
	}
	for l1, host := range files {
		if !path.IsAbs(l1) || path.Clean(l1) != l1 {
			t.Fatalf("lab: L1 path %q: want a clean absolute path", l1)
		}
		if err := copyFile(filepath.Join(dir, l1), host); err != nil {
			t.Fatalf("lab: %v", err)
		}
	}
	results := runL1(t, opts, dir, false)
	again := false
	for i, r := range results {
		c := opts.Commands[i]
		if r.ExitCode == c.Want {
			continue
		}
		how := fmt.Sprintf("exited %d, not %d", r.ExitCode, c.Want)
		if r.ExitCode == Unfinished {
			how = "did not finish"
		}
		t.Logf("lab: %s %s; its output ends:\n%s", c.Name, how, tail(r.Output))
		noteRerun(t, fmt.Sprintf("%s: %s %s; its last line: %s\n%s", t.Name(), c.Name, how, lastLine(r.Output),
			indent(tail(r.Output))))
		again = true
	}
	if again {
		// All of them: a command may use files an earlier one made.
		t.Logf("lab: running the %d commands once more, in a fresh L1", len(opts.Commands))
		results = runL1(t, opts, dir, true)
	}
	return results
}

// noteRerun appends note (a line, then the output's tail, indented) to the
// file $SQUIB_LAB_RERUN_LOG names, if any: test.sh prints it after the
// tests, since go test shows the logs of passing tests only with -v, and
// the first run's output is all there is to tell why it failed.
func noteRerun(t testing.TB, note string) {
	name := os.Getenv("SQUIB_LAB_RERUN_LOG")
	if name == "" {
		return
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err == nil {
		_, err = fmt.Fprintln(f, note)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		t.Errorf("lab: noting the rerun in $SQUIB_LAB_RERUN_LOG: %v", err)
	}
}

// lastLine returns the last line of a command's output that QEMU did not
// print (a cut-off command's output ends with QEMU's own last words).
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i > 0 && strings.HasPrefix(lines[i], "qemu-system-aarch64:"); i-- {
		lines = lines[:i]
	}
	return strings.TrimSpace(lines[len(lines)-1])
}

// runL1 runs opts.Commands in one L1 whose extra files are in dir. If the
// run times out, the commands it did not finish are Unfinished, unless this
// is the last try.
func runL1(t testing.TB, opts Options, dir string, last bool) []Result {
	t.Helper()
	scenario, err := writeScenario(dir, opts.Commands)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "scenario.sh"), scenario, 0o644); err != nil {
		t.Fatalf("lab: %v", err)
	}

	console, took, err := boot(opts, dir)
	if errors.Is(err, errL1Lockup) {
		// The emulated host wedged (QEMU TCG running nested KVM does, now
		// and then): not squibd's doing, so give the scenario one more L1.
		t.Logf("lab: the L1 kernel locked up (an emulation fault, not the scenario's); booting L1 again:\n%s", lockupLines(console))
		console, took, err = boot(opts, dir)
	}
	switch {
	case errors.Is(err, errL1Lockup):
		t.Fatalf("lab: the L1 kernel locked up twice; console tail:\n%s", tail(console))
	case errors.Is(err, errTimeout) && last:
		t.Fatalf("lab: L1 run timed out after %s; console tail:\n%s", opts.Timeout, tail(console))
	case errors.Is(err, errTimeout):
		t.Logf("lab: L1 run timed out after %s", opts.Timeout)
	case err != nil:
		t.Fatalf("lab: boot-l1.sh: %v; console tail:\n%s", err, tail(console))
	}
	results, err := parse(console, opts.Commands, opts.PageSize, errors.Is(err, errTimeout))
	if err != nil {
		t.Fatalf("lab: %v; console tail:\n%s", err, tail(console))
	}
	kernel := "6.12"
	if opts.Linux61 {
		kernel = "6.1"
	}
	t.Logf("lab: L1 (Linux %s, %d KiB pages) ran %d commands in %s", kernel, opts.PageSize, len(results), took)
	return results
}

var (
	errTimeout  = errors.New("timed out")
	errL1Lockup = errors.New("the L1 kernel locked up")
)

// l1Lockup matches the L1 kernel's own reports of a wedged CPU. Only L1's
// kernel prints timestamps on the console: the lab's guest kernel has no
// PRINTK_TIME, so its messages, which scenarios may print, never match.
var l1Lockup = regexp.MustCompile(`(?m)^\[\s*\d+\.\d+\] (rcu: INFO: rcu_\w+ detected stalls|watchdog: Watchdog detected hard LOCKUP|watchdog: BUG: soft lockup)`)

func lockupLines(console string) string {
	return strings.Join(l1Lockup.FindAllString(console, 3), "\n")
}

// boot runs one L1 with the scenario in dir and returns its console. It
// stops L1 at once, with errL1Lockup, when L1's kernel reports a lockup.
func boot(opts Options, dir string) (string, time.Duration, error) {
	w := &watcher{log: opts.Log, lockup: make(chan struct{})}
	// boot-l1.sh's own timeout stops QEMU; the context is a backstop
	// that kills the whole process group.
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout+time.Minute)
	defer cancel()
	kernel := strconv.Itoa(int(opts.PageSize))
	if opts.Linux61 {
		kernel += "-6.1"
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(Dir(), "boot-l1.sh"),
		"-p", kernel,
		"-t", strconv.FormatFloat(opts.Timeout.Seconds(), 'f', -1, 64), dir)
	cmd.Env = append(os.Environ(), "SQUIB_LAB_CACHE="+Cache())
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	go func() {
		select {
		case <-w.lockup:
			cancel()
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start).Round(100 * time.Millisecond)
	console := w.String()
	var exit *exec.ExitError
	switch {
	case l1Lockup.MatchString(console):
		return console, took, errL1Lockup
	case err != nil && (errors.As(err, &exit) && exit.ExitCode() == 124 || ctx.Err() != nil):
		return console, took, errTimeout
	}
	return console, took, err
}

// watcher collects the console, copies it to log if set, and closes lockup
// once L1's kernel reports a lockup.
type watcher struct {
	mu      sync.Mutex
	console strings.Builder
	log     io.Writer
	lockup  chan struct{}
	closed  bool
	checked int // console bytes already searched, up to a line start
}

func (w *watcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.console.Write(p)
	if w.log != nil {
		w.log.Write(p)
	}
	s := w.console.String()
	if end := strings.LastIndexByte(s, '\n'); end >= w.checked {
		if !w.closed && l1Lockup.MatchString(s[w.checked:end+1]) {
			w.closed = true
			close(w.lockup)
		}
		w.checked = end + 1
	}
	return len(p), nil
}

func (w *watcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.console.String()
}

// writeScenario returns the scenario.sh that runs cmds through l1-init's
// run function, writing the commands' stdin under dir/lab/stdin.
func writeScenario(dir string, cmds []Command) ([]byte, error) {
	var b strings.Builder
	for i, c := range cmds {
		if len(c.Args) == 0 {
			return nil, fmt.Errorf("command %d (%q) has no Args", i, c.Name)
		}
		stdin := "/dev/null"
		if c.Stdin != "" {
			stdin = fmt.Sprintf("/lab/stdin/%d", i)
			if err := os.MkdirAll(filepath.Join(dir, "lab/stdin"), 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(dir, stdin), []byte(c.Stdin), 0o644); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(&b, "run %d %s %s", i, shellQuote(strings.ReplaceAll(c.Name, "\n", " ")), stdin)
		for _, a := range c.Args {
			b.WriteString(" " + shellQuote(a))
		}
		b.WriteString("\n")
	}
	return []byte(b.String()), nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// parse reads the results of cmds from the L1 console; l1-init documents
// the markers. If the run was cut off, the commands it did not finish are
// Unfinished, with what they printed on the console as their Output.
func parse(console string, cmds []Command, page PageSize, cutOff bool) ([]Result, error) {
	var (
		booted, done bool
		out          = make([]strings.Builder, len(cmds))
		stderr       = make([]strings.Builder, len(cmds))
		live         = make([]strings.Builder, len(cmds))
		exit         = make([]*int, len(cmds))
		current      = -1
	)
	for line := range strings.Lines(console) {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "SQUIB-L1-") {
			if current >= 0 {
				live[current].WriteString(strings.TrimRight(line, "\r\n") + "\n")
			}
			continue
		}
		switch f[0] {
		case "SQUIB-L1-BEGIN":
			if len(f) < 2 {
				return nil, fmt.Errorf("garbled marker line %q", line)
			}
			if i, err := strconv.Atoi(f[1]); err == nil && i >= 0 && i < len(cmds) {
				current = i
			}
		case "SQUIB-L1-BOOTED":
			booted = true
			if want := fmt.Sprintf("pagesize=%d", page); !slices.Contains(f, want) {
				return nil, fmt.Errorf("L1 booted with %q, want %s", strings.TrimSpace(line), want)
			}
		case "SQUIB-L1-NOKVM":
			return nil, errors.New("L1 has no /dev/kvm")
		case "SQUIB-L1-DONE":
			done = true
		case "SQUIB-L1-OUT", "SQUIB-L1-ERR", "SQUIB-L1-EXIT":
			if len(f) != 3 {
				return nil, fmt.Errorf("garbled marker line %q", line)
			}
			i, err := strconv.Atoi(f[1])
			if err != nil || i < 0 || i >= len(cmds) {
				return nil, fmt.Errorf("marker for unknown command in %q", line)
			}
			switch f[0] {
			case "SQUIB-L1-OUT":
				out[i].WriteString(f[2])
			case "SQUIB-L1-ERR":
				stderr[i].WriteString(f[2])
			default:
				code, err := strconv.Atoi(f[2])
				if err != nil {
					return nil, fmt.Errorf("garbled exit status in %q", line)
				}
				exit[i] = &code
				current = -1
			}
		}
	}
	if !booted {
		return nil, errors.New("L1 did not boot")
	}
	results := make([]Result, len(cmds))
	for i, c := range cmds {
		if exit[i] == nil && cutOff {
			results[i] = Result{Name: c.Name, Output: live[i].String(), ExitCode: Unfinished}
			continue
		}
		if exit[i] == nil {
			return nil, fmt.Errorf("command %d (%q) did not finish", i, c.Name)
		}
		o, err1 := base64.StdEncoding.DecodeString(out[i].String())
		e, err2 := base64.StdEncoding.DecodeString(stderr[i].String())
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("command %d (%q): output garbled on the console: %v", i, c.Name, err)
		}
		results[i] = Result{Name: c.Name, Output: string(o), Stderr: string(e), ExitCode: *exit[i]}
	}
	if !done && !cutOff {
		return nil, errors.New("L1 did not finish its scenario")
	}
	return results, nil
}

// indent prefixes every line of s with four spaces.
func indent(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }

// tail returns the last lines of the console, for failure messages.
func tail(console string) string {
	lines := strings.Split(strings.TrimRight(console, "\n"), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	return strings.Join(lines, "\n")
}
