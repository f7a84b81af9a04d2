// Package e2e holds squib's end-to-end tests: real squibd binaries booting
// real arm64 guests in the lab (see lab/README.md).
package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/squibvm/squib/lab"
)

// guestRun returns the argv that boots the lab guest with squib.test=test.
func guestRun(test string, extra ...string) []string {
	args := []string{"/squibd", "run", "--kernel", "/guest/Image", "--initrd", "/guest/initrd.gz",
		"--cmdline", "console=ttyAMA0 earlycon panic=-1 squib.test=" + test}
	return append(args, extra...)
}

// guestTrouble matches the guest kernel's lines that explain a failed run;
// testdata/lib.sh's fail greps for the same lines in the scenarios' logs.
var guestTrouble = regexp.MustCompile(`Kernel panic|Oops|Unable to handle|failed to come online|rcu.*stall`)

// why returns the line of a lab command's output that best explains its
// failure, for the first line of a test's error, which is what a CI summary
// keeps: a scenario's own "FAIL" line, else the guest's first sign of
// trouble, else the last line.
func why(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "FAIL ") {
			return l
		}
	}
	for _, l := range lines {
		if guestTrouble.MatchString(l) {
			return "guest: " + l
		}
	}
	return "last line: " + lines[len(lines)-1]
}

// consoleInput types into squibd's stdin once the guest's shell prompts, as
// a person would; the guest's shell evaluates the line, so the answer proves
// the bytes reached the guest.
const consoleInput = `mkfifo /tmp/in
/squibd run --kernel /guest/Image --initrd /guest/initrd.gz \
  --cmdline "console=ttyAMA0 earlycon squib.test=shell" </tmp/in >/tmp/out 2>&1 &
pid=$!
exec 3>/tmp/in
i=0; until grep -q '/ #' /tmp/out || [ $i -ge 1200 ]; do sleep 0.1; i=$((i+1)); done
echo 'echo SQUIB-STDIN-$((6*7))' >&3
echo exit >&3
exec 3>&-
wait $pid; s=$?
cat /tmp/out
exit $s`

// TestBoot runs the boot scenarios of issue 2 in one L1 per host page size:
// a 1-vCPU guest powering off, the same from a gzip'd Image, a 2-vCPU guest
// whose secondary comes up through squib's PSCI, a guest reboot, and every
// bad input, each checked for its exit status and its output.
func TestBoot(t *testing.T) {
	lab.Require(t)
	for _, ps := range []lab.PageSize{4, 16} {
		t.Run(fmt.Sprintf("%dK", ps), func(t *testing.T) {
			bootScenarios(t, ps)
		})
	}
}

func bootScenarios(t *testing.T, ps lab.PageSize) {
	type check struct {
		want   []string // substrings of the combined output
		stderr string   // substring of stderr, for error cases
	}
	scenarios := []struct {
		cmd lab.Command
		check
	}{
		{lab.Command{Name: "poweroff", Args: guestRun("poweroff")},
			check{[]string{"SQUIB-GUEST-INIT", "SQUIB-GUEST-POWEROFF"}, ""}},
		{lab.Command{Name: "gzip-image", Args: append(guestRun("poweroff"), "--kernel", "/guest/Image.gz")},
			check{[]string{"SQUIB-GUEST-INIT", "SQUIB-GUEST-POWEROFF"}, ""}},
		{lab.Command{Name: "smp2", Args: guestRun("cpus", "--cpus", "2", "--log-level", "info")},
			check{[]string{"SQUIB-GUEST-NPROC=2", "SQUIB-GUEST-CPUS-ONLINE=0-1", `msg="vCPU powered on" vcpu=1`}, ""}},
		{lab.Command{Name: "console-input", Args: []string{"/bin/sh", "-c", consoleInput}},
			check{[]string{"SQUIB-STDIN-42"}, ""}},
		{lab.Command{Name: "console-file", Args: []string{"/bin/sh", "-c",
			`/squibd run --kernel /guest/Image --initrd /guest/initrd.gz --console file:/tmp/console.log \
			  --cmdline "console=ttyAMA0 earlycon squib.test=poweroff" >/tmp/stdout.log; s=$?;
			 grep -c SQUIB-GUEST-INIT /tmp/stdout.log; sed 's/^/FILE:/' /tmp/console.log; exit $s`}},
			check{[]string{"0\n", "FILE:SQUIB-GUEST-INIT", "FILE:SQUIB-GUEST-POWEROFF"}, ""}},
		{lab.Command{Name: "reboot", Args: guestRun("reboot"), Want: 3},
			check{[]string{"SQUIB-GUEST-REBOOT"}, ""}},
		{lab.Command{Name: "bad-image", Args: []string{"/squibd", "run", "--kernel", "/bin/busybox"}, Want: 1},
			check{nil, "not an arm64 Linux Image"}},
		{lab.Command{Name: "missing-kernel", Args: []string{"/squibd", "run", "--kernel", "/guest/nope"}, Want: 1},
			check{nil, "no such file or directory"}},
		{lab.Command{Name: "missing-initrd", Args: []string{"/squibd", "run", "--kernel", "/guest/Image", "--initrd", "/nope"}, Want: 1},
			check{nil, "--initrd: open /nope: no such file or directory"}},
		{lab.Command{Name: "small-memory", Args: guestRun("poweroff", "--memory", "4"), Want: 1},
			check{nil, "memory too small"}},
		{lab.Command{Name: "zero-cpus", Args: guestRun("poweroff", "--cpus", "0"), Want: 1},
			check{nil, "--cpus 0: a VM needs at least one vCPU"}},
		{lab.Command{Name: "too-many-cpus", Args: guestRun("poweroff", "--cpus", "124"), Want: 1},
			check{nil, "at most 123"}},
		{lab.Command{Name: "no-kvm", Args: []string{"/bin/sh", "-c",
			"mv /dev/kvm /dev/kvm.off; /squibd run --kernel /guest/Image; s=$?; mv /dev/kvm.off /dev/kvm; exit $s"}, Want: 1},
			check{nil, "no usable hypervisor: /dev/kvm does not exist"}},
	}
	cmds := make([]lab.Command, len(scenarios))
	for i, s := range scenarios {
		cmds[i] = s.cmd
	}
	results := lab.Run(t, lab.Options{PageSize: ps, Commands: cmds})
	for i, r := range results {
		s := scenarios[i]
		if r.ExitCode != s.cmd.Want {
			t.Errorf("%s: exit status %d, want %d (%s)\n%s", r.Name, r.ExitCode, s.cmd.Want, why(r.Output), r.Output)
			continue
		}
		for _, w := range s.want {
			if !strings.Contains(r.Output, w) {
				t.Errorf("%s: output lacks %q\n%s", r.Name, w, r.Output)
			}
		}
		if s.stderr != "" {
			if !strings.Contains(r.Stderr, s.stderr) || strings.Count(r.Stderr, "\n") != 1 {
				t.Errorf("%s: stderr %q, want one line containing %q", r.Name, r.Stderr, s.stderr)
			}
		}
		if strings.Contains(r.Output, "goroutine ") || strings.Contains(r.Output, "panic:") {
			t.Errorf("%s: squibd crashed\n%s", r.Name, r.Output)
		}
	}
}

// TestBootInKernelPSCI runs squibd on a KVM older than the SMCCC filter
// (Linux 6.4): Debian's Linux 6.1 as L1. squibd says it falls back to KVM's
// in-kernel PSCI; the guest still brings its secondary up (KVM, not squib,
// powers it on), powers off with status 0 and resets with status 3, both
// now reported by KVM as system events.
func TestBootInKernelPSCI(t *testing.T) {
	lab.Require(t)
	results := lab.Run(t, lab.Options{Linux61: true, Commands: []lab.Command{
		{Name: "uname", Args: []string{"uname", "-r"}},
		{Name: "smp2", Args: guestRun("cpus", "--cpus", "2", "--log-level", "info")},
		{Name: "reboot", Args: guestRun("reboot"), Want: 3},
	}})
	if r := results[0]; !strings.HasPrefix(r.Output, "6.1.") {
		t.Fatalf("L1 runs Linux %q, want 6.1", r.Output)
	}
	r := results[1]
	for _, w := range []string{"this KVM has no SMCCC filter (Linux < 6.4): PSCI is handled by the kernel",
		"SQUIB-GUEST-NPROC=2", "SQUIB-GUEST-CPUS-ONLINE=0-1", "SQUIB-GUEST-POWEROFF"} {
		if !strings.Contains(r.Output, w) {
			t.Errorf("smp2: output lacks %q\n%s", w, r.Output)
		}
	}
	if strings.Contains(r.Output, `msg="vCPU powered on" vcpu=1`) {
		t.Errorf("smp2: squib's PSCI powered vCPU 1 on, though KVM handles PSCI here\n%s", r.Output)
	}
	if r.ExitCode != 0 {
		t.Errorf("smp2: exit status %d, want 0 (SYSTEM_OFF; %s)\n%s", r.ExitCode, why(r.Output), r.Output)
	}
	if r := results[2]; r.ExitCode != 3 || !strings.Contains(r.Output, "SQUIB-GUEST-REBOOT") {
		t.Errorf("reboot: exit status %d, want 3 (SYSTEM_RESET; %s)\n%s", r.ExitCode, why(r.Output), r.Output)
	}
}
