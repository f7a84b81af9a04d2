package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/lab"
)

// TestSnapshot runs the snapshot scenarios in testdata (see each script's
// comment) in one L1 per page size, against real guests and squibd's real
// snapshot files: restore after SIGKILL and clones (restore.sh), diff
// chains, merge and a full disk (diff.sh), bad snapshots (badinput.sh),
// PSCI restore policies (psci.sh) and the save-restore-save round trip
// (roundtrip.sh).
func TestSnapshot(t *testing.T) {
	lab.Require(t)
	files := labFiles(t)
	scripts := []string{"restore", "diff", "badinput", "psci", "roundtrip"}
	for _, ps := range []lab.PageSize{lab.Page4K, lab.Page16K} {
		t.Run(fmt.Sprintf("%dK", ps), func(t *testing.T) {
			var cmds []lab.Command
			for _, s := range scripts {
				cmds = append(cmds, lab.Command{Name: s, Args: []string{"/bin/sh", "/e2e/" + s + ".sh"}})
			}
			rs := lab.Run(t, lab.Options{PageSize: ps, Files: files, Commands: cmds, Timeout: 12 * time.Minute})
			for i, check := range []func(*testing.T, string){checkRestore, checkDiff, checkBadInput, checkPSCI, checkRoundTrip} {
				t.Run(scripts[i], func(t *testing.T) {
					if rs[i].ExitCode != 0 {
						t.Fatalf("%s.sh exited %d: %s\n%s", scripts[i], rs[i].ExitCode, why(rs[i].Output), rs[i].Output)
					}
					check(t, rs[i].Output)
					if t.Failed() {
						t.Logf("output:\n%s", rs[i].Output)
						return
					}
					for _, l := range markerLine.FindAllString(rs[i].Output, -1) {
						t.Log(l)
					}
				})
			}
		})
	}
}

// TestSnapshotInKernelPSCI runs the round trip on Debian's Linux 6.1 L1,
// whose KVM handles PSCI itself: squib never sees CPU_ON there, so a 2-vCPU
// guest's secondary is saved and restored by its KVM MP state.
func TestSnapshotInKernelPSCI(t *testing.T) {
	lab.Require(t)
	r := lab.Run(t, lab.Options{Linux61: true, Files: labFiles(t), Timeout: 12 * time.Minute,
		Commands: []lab.Command{{Name: "roundtrip", Args: []string{"/bin/sh", "/e2e/roundtrip.sh"}}}})[0]
	if r.ExitCode != 0 {
		t.Fatalf("roundtrip.sh exited %d: %s\n%s", r.ExitCode, why(r.Output), r.Output)
	}
	checkRoundTrip(t, r.Output)
	for _, l := range markerLine.FindAllString(r.Output, -1) {
		t.Log(l)
	}
	if t.Failed() {
		t.Logf("output:\n%s", r.Output)
	}
}

// labFiles cross-compiles labtool and returns the files the snapshot
// scenarios need in L1: /labtool and testdata's scripts under /e2e.
func labFiles(t testing.TB) map[string]string {
	t.Helper()
	files := map[string]string{"/labtool": buildForL1(t, "./labtool")}
	scripts, err := filepath.Glob("testdata/*.sh")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scenario scripts in testdata: %v", err)
	}
	for _, s := range scripts {
		files["/e2e/"+filepath.Base(s)] = s
	}
	return files
}

// fields returns the key=value pairs of the first line starting with
// prefix and a space, or nil. A value runs to the next " key=" or the end
// of the line, so messages with spaces stay whole when they come last.
func fields(out, prefix string) map[string]string {
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(line, prefix+" ")
		if !ok {
			continue
		}
		m := map[string]string{}
		keys := keyRE.FindAllStringSubmatchIndex(rest, -1)
		for i, k := range keys {
			end := len(rest)
			if i+1 < len(keys) {
				end = keys[i+1][0]
			}
			m[rest[k[2]:k[3]]] = strings.TrimSpace(rest[k[1]:end])
		}
		return m
	}
	return nil
}

// markerLine matches the lines the scenarios print for the test to read.
var markerLine = regexp.MustCompile(`(?m)^[A-Z][A-Z0-9-]+ .*$`)

var keyRE = regexp.MustCompile(`(?:^| )([a-z][a-z0-9_-]*)=`)

// counters parses "n1,n2,...," into numbers.
func counters(s string) []int {
	var ns []int
	for _, f := range strings.Split(strings.TrimSuffix(s, ","), ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil
		}
		ns = append(ns, n)
	}
	return ns
}

// checkContinues checks a restored guest's AFTER line: its first counters
// follow from, and every checksum it printed is pattern's.
func checkContinues(t *testing.T, after map[string]string, from int, pattern string) {
	t.Helper()
	got := counters(after["counters"])
	if len(got) != 3 || got[0] != from+1 || got[1] != from+2 || got[2] != from+3 {
		t.Errorf("after restore the counter reads %v; want it to continue from %d", got, from)
	}
	if sums := after["sums"]; len(pattern) != 32 || sums != pattern+"," {
		t.Errorf("memory pattern checksums after restore %q; want only %q", sums, pattern)
	}
}

func checkRestore(t *testing.T, out string) {
	before := fields(out, "BEFORE")
	n, err := strconv.Atoi(before["counter"])
	if err != nil || n < 3 {
		t.Fatalf("no counter before the snapshot: %v", before)
	}
	for _, clone := range []string{"b", "c"} {
		after := fields(out, "AFTER "+clone)
		checkContinues(t, after, n, before["pattern"])
		if after["state"] != "Running" {
			t.Errorf("clone %s reports %q, want Running", clone, after["state"])
		}
	}
	mf := fields(out, "MEMORY-FILE")
	apparent, _ := strconv.Atoi(mf["apparent"])
	allocated, _ := strconv.Atoi(mf["allocated"])
	if apparent < 128<<20 || allocated <= 0 || allocated > apparent/2 {
		t.Errorf("memory file of a 128 MiB guest: %d bytes, %d allocated; want it sparse", apparent, allocated)
	}
}

func checkDiff(t *testing.T, out string) {
	full := fields(out, "FULLDISK")
	if full["exit"] != "1" || full["files"] != "0" || full["state"] != "Paused" || !strings.Contains(full["msg"], "no space left") {
		t.Errorf("snapshot onto a full disk: %v; want exit 1, no files, still Paused, and the reason", full)
	}
	if fields(out, "FULLDISK-RESUMED") == nil {
		t.Error("the VM did not run on after the failed snapshot")
	}
	if !strings.Contains(out, "RAM-EQUAL merged=ref") {
		t.Error("base + 2 diffs merged do not hold the RAM of a full snapshot taken at the same moment")
	}
	if !strings.Contains(out, "RAM-DIFFERS base!=ref") {
		t.Error("the base snapshot holds the same RAM as the last one: the comparison proves nothing")
	}
	blocks := map[string]int{}
	for _, s := range []string{"base", "d1", "d2", "ref"} {
		blocks[s], _ = strconv.Atoi(fields(out, "SNAPSHOT "+s)["data_blocks"])
	}
	// d1 holds the 1 MiB rewritten, d2 the 2 MiB of the failed diff (carried) and 1 more.
	if blocks["d1"] == 0 || blocks["d2"] <= blocks["d1"] || blocks["d2"] >= blocks["base"] || blocks["ref"] < blocks["base"] {
		t.Errorf("data blocks %v; want 0 < d1 < d2 < base <= ref", blocks)
	}
	direct := fields(out, "DIRECT-DIFF")
	if direct["exit"] != "1" || !strings.Contains(direct["msg"], "merge") {
		t.Errorf("loading a diff directly: %v; want a refusal pointing to merge", direct)
	}
	before := fields(out, "BEFORE")
	n, _ := strconv.Atoi(before["counter"])
	checkContinues(t, fields(out, "AFTER b"), n, before["pattern"])
}

func checkBadInput(t *testing.T, out string) {
	for name, want := range map[string]string{
		"truncate": "truncated", "flip": "checksum", "version": "format 2.", "arch": "riscv64",
		"midr":    "ID register MIDR_EL1 (S3_0_C0_C0_0) is 0x",
		"backend": "backend", "pagesize": "-byte pages", "missing-memory": "no such file",
		"wrong-memory": "memory file", "diff-as-memory": "memory file", "short-memory": "memory file",
	} {
		f := fields(out, "BAD "+name)
		if f["exit"] != "1" || f["state"] != "Not started" || f["lines"] != "1" || !strings.Contains(f["msg"], want) {
			t.Errorf("bad input %s: %v; want exit 1, no VM, one line mentioning %q", name, f, want)
		}
	}
	if !strings.Contains(out, "NOTHING-WRITTEN") {
		t.Error("refused loads changed files")
	}
	if f := fields(out, "GOOD-AFTER-BAD"); f["state"] != "Running" {
		t.Errorf("a good snapshot after the bad ones: %v", f)
	}
}

func checkPSCI(t *testing.T, out string) {
	for _, k := range []string{"SAVED", "BSP-OFFLINE"} {
		if f := fields(out, k); f["cpus"] != "0-1" || f["state"] != "Running" {
			t.Errorf("%s: %v; want both CPUs online and the VM running", k, f)
		}
	}
	// With CPU 1 online when saved, boot_vcpu would lose it: refused.
	if f := fields(out, "BSP-ONLINE"); f["lines"] != "1" || f["state"] != "Not" ||
		!strings.Contains(out, "boot_vcpu restores only vCPU 0, but vCPU 1 was online") {
		t.Errorf("boot_vcpu load of a guest with CPU 1 online: %v; want it refused in one line, the microVM not started", f)
	}
}

// checkRoundTrip wants every ROUNDTRIP line of roundtrip.sh SAME, and the
// guests running on after it: 1 and 2 vCPUs, memory mapped and copied, a
// guest whose kernel uses pointer authentication (address and generic).
func checkRoundTrip(t *testing.T, out string) {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "ROUNDTRIP ") {
			n++
			if !strings.Contains(l, "result=SAME ") || !strings.HasSuffix(l, " pauth=paca,pacg") {
				t.Errorf("%s", l)
			}
		}
	}
	if n != 4 {
		t.Errorf("%d round trips, want 4", n)
	}
}
