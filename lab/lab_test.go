package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestL1Boots boots L1 with each page size and checks, through the harness,
// that /dev/kvm is there and that output, stderr, stdin, exit statuses and
// extra files come back intact. A command that exits with a status other
// than its Want makes Run log it and run the commands again in a fresh L1,
// whose results it returns.
func TestL1Boots(t *testing.T) {
	Require(t)
	extra := filepath.Join(t.TempDir(), "extra")
	if err := os.WriteFile(extra, []byte("extra file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, page := range []PageSize{Page4K, Page16K} {
		t.Run(fmt.Sprintf("%dK", page), func(t *testing.T) {
			reruns := filepath.Join(t.TempDir(), "reruns")
			t.Setenv("SQUIB_LAB_RERUN_LOG", reruns)
			rec := &logRecorder{TB: t}
			res := Run(rec, Options{
				PageSize: page,
				NoSquibd: true,
				Files:    map[string]string{"/data/extra": extra},
				Commands: []Command{
					{Name: "kvm", Args: []string{"/bin/sh", "-c", "test -c /dev/kvm && echo kvm ok"}},
					{Name: "status", Args: []string{"/bin/sh", "-c", "echo out; echo err >&2; exit 7"}, Want: 7},
					{Name: "rerun", Args: []string{"/bin/sh", "-c", "cat /proc/sys/kernel/random/boot_id; exit 5"}},
					{Name: "stdin", Args: []string{"cat"}, Stdin: "line 1\nno newline"},
					{Name: "files", Args: []string{"cat", "/data/extra"}},
					{Name: "guest", Args: []string{"ls", "/guest"}},
				},
			})
			want := []Result{
				{Name: "kvm", Output: "kvm ok\n"},
				{Name: "status", Output: "out\nerr\n", Stderr: "err\n", ExitCode: 7},
				{Name: "rerun", Output: res[2].Output, ExitCode: 5},
				{Name: "stdin", Output: "line 1\nno newline"},
				{Name: "files", Output: "extra file\n"},
				{Name: "guest", Output: "Image\nImage.gz\ninitrd.gz\nrootfs.ext4.gz\n"},
			}
			checkResults(t, res, want)
			// The rerun's L1 is not the first one: it has another boot ID.
			logged := strings.Join(rec.logs, "\n")
			first := regexp.MustCompile(`rerun exited 5, not 0; its output ends:\n(\S+)`).FindStringSubmatch(logged)
			second := strings.TrimSpace(res[2].Output)
			if first == nil || len(second) != 36 || first[1] == second {
				t.Errorf("rerun: want a logged first run and a second run in another L1; log:\n%s\nsecond run's boot ID: %q", logged, second)
			}
			noted, err := os.ReadFile(reruns)
			if want := t.Name() + ": rerun exited 5, not 0; its last line: " + first[1] + "\n    " + first[1] + "\n"; first != nil && string(noted) != want {
				t.Errorf("$SQUIB_LAB_RERUN_LOG holds %q (%v), want %q", noted, err, want)
			}
		})
	}
}

func checkResults(t *testing.T, got, want []Result) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d results, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("result %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

// logRecorder keeps what Run logs, and passes it on.
type logRecorder struct {
	testing.TB
	logs []string
}

func (r *logRecorder) Logf(format string, args ...any) {
	r.TB.Helper()
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
	r.TB.Logf(format, args...)
}

func TestParse(t *testing.T) {
	cmds := []Command{{Name: "a"}, {Name: "b"}}
	// What the L1 console looks like: CRLF line ends, kernel messages.
	console := strings.ReplaceAll(`lab: booting L1
[    1.0] some kernel message
SQUIB-L1-BOOTED uptime=2.53 pagesize=16
SQUIB-L1-BEGIN 0 a
hello
SQUIB-L1-OUT 0 aGVs
SQUIB-L1-OUT 0 bG8K
SQUIB-L1-EXIT 0 0
SQUIB-L1-BEGIN 1 b
[    2.0] kvm: a warning
SQUIB-L1-OUT 1 b29wcwo=
SQUIB-L1-ERR 1 b29wcwo=
SQUIB-L1-EXIT 1 139
SQUIB-L1-DONE
`, "\n", "\r\n")
	got, err := parse(console, cmds, Page16K, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []Result{
		{Name: "a", Output: "hello\n"},
		{Name: "b", Output: "oops\n", Stderr: "oops\n", ExitCode: 139},
	}
	checkResults(t, got, want)

	for _, tc := range []struct{ name, console, err string }{
		{"no boot", "kernel panic\n", "did not boot"},
		{"page size", "SQUIB-L1-BOOTED uptime=1 pagesize=4\n", "want pagesize=16"},
		{"no kvm", "SQUIB-L1-BOOTED uptime=1 pagesize=16\nSQUIB-L1-NOKVM\n", "no /dev/kvm"},
		{"unfinished", "SQUIB-L1-BOOTED uptime=1 pagesize=16\nSQUIB-L1-EXIT 0 0\n", `command 1 ("b") did not finish`},
		{"garbled", "SQUIB-L1-BOOTED uptime=1 pagesize=16\nSQUIB-L1-OUT 0 a[ 3.1] x\nSQUIB-L1-EXIT 0 0\nSQUIB-L1-EXIT 1 0\n", "garbled"},
		{"not done", "SQUIB-L1-BOOTED uptime=1 pagesize=16\nSQUIB-L1-EXIT 0 0\nSQUIB-L1-EXIT 1 0\n", "did not finish its scenario"},
	} {
		if _, err := parse(tc.console, cmds, Page16K, false); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.err)
		}
	}
}

// TestParseCutOff: when the L1 run timed out, the command it cut off gets
// what it printed on the console, and it and the commands never reached are
// Unfinished.
func TestParseCutOff(t *testing.T) {
	cmds := []Command{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	console := strings.ReplaceAll(`SQUIB-L1-BOOTED uptime=2.53 pagesize=4
SQUIB-L1-BEGIN 0 a
SQUIB-L1-OUT 0 aGkK
SQUIB-L1-EXIT 0 0
SQUIB-L1-BEGIN 1 b
Booting Linux on physical CPU 0x0000000000
rcu: Hierarchical SRCU implementation.
`, "\n", "\r\n")
	got, err := parse(console, cmds, Page4K, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []Result{
		{Name: "a", Output: "hi\n"},
		{Name: "b", Output: "Booting Linux on physical CPU 0x0000000000\nrcu: Hierarchical SRCU implementation.\n", ExitCode: Unfinished},
		{Name: "c", ExitCode: Unfinished},
	}
	checkResults(t, got, want)
	if _, err := parse(console, cmds, Page4K, false); err == nil {
		t.Error("a run that was not cut off but did not finish parsed without error")
	}
}

func TestLastLine(t *testing.T) {
	for out, want := range map[string]string{
		"":       "",
		"a\nb\n": "b",
		"a\nb\nqemu-system-aarch64: terminating on signal 15 from pid 1 (timeout)\n": "b",
		"qemu-system-aarch64: terminating on signal 15 from pid 1 (timeout)\n":       "qemu-system-aarch64: terminating on signal 15 from pid 1 (timeout)",
	} {
		if got := lastLine(out); got != want {
			t.Errorf("lastLine(%q) = %q, want %q", out, got, want)
		}
	}
}

// TestLockupWatch: the L1 kernel's timestamped lockup reports close the
// watcher's lockup channel, however the console is split into writes; a
// guest's messages (no timestamps) and ordinary L1 lines do not.
func TestLockupWatch(t *testing.T) {
	quiet := "SQUIB-L1-BEGIN 0 restore\nrcu: INFO: rcu_sched detected stalls on CPUs/tasks:\n[    2.1] NET: Registered PF_VSOCK\n"
	stall := "[   23.822980] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:\n"
	for name, c := range map[string]struct {
		console string
		want    bool
	}{
		"guest and L1 chatter": {quiet, false},
		"L1 rcu stall":         {quiet + stall, true},
		"L1 hard lockup":       {quiet + "[   34.077724] watchdog: Watchdog detected hard LOCKUP on cpu 1\n", true},
	} {
		for _, chunk := range []int{1, 7, 4096} {
			w := &watcher{lockup: make(chan struct{})}
			for s := c.console; s != ""; {
				n := min(chunk, len(s))
				w.Write([]byte(s[:n]))
				s = s[n:]
			}
			select {
			case <-w.lockup:
				if !c.want {
					t.Errorf("%s, %d-byte writes: lockup reported", name, chunk)
				}
			default:
				if c.want {
					t.Errorf("%s, %d-byte writes: lockup missed", name, chunk)
				}
			}
			if w.String() != c.console {
				t.Errorf("%s: console not kept whole", name)
			}
		}
	}
}
