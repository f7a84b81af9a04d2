//go:build darwin && arm64

package hvf_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/squibvm/squib/loader"
	"github.com/squibvm/squib/psci"
	"github.com/squibvm/squib/snapshot"
	"github.com/squibvm/squib/vmm"
)

var (
	counterRE = regexp.MustCompile(`SQUIB-GUEST-COUNTER=(\d+) CPUS=\S+ SUM=([0-9a-f]{32})`)
	patternRE = regexp.MustCompile(`SQUIB-GUEST-PATTERN=([0-9a-f]{32})`)
)

// waitConsole polls the console until re has matched n times, and returns
// the last match.
func waitConsole(t *testing.T, console *syncBuffer, re *regexp.Regexp, n int) []string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if all := re.FindAllStringSubmatch(console.String(), -1); len(all) >= n {
			return all[len(all)-1]
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("console never matched %v %d times:\n%s", re, n, console.String())
	return nil
}

// TestSnapshotScenarios runs the lab's snapshot scenarios on
// Hypervisor.framework with the lab guest's workload (lab/guest-init):
// a full snapshot and a diff of a running guest (dirty pages tracked by
// write protection), merged into the same RAM as a full snapshot taken at
// the diff's moment; that snapshot restored, mapped copy-on-write and
// copied in, continues the counter with its memory pattern intact (one
// VM per process, so the restores run one after the other).
func TestSnapshotScenarios(t *testing.T) {
	kernel, rd := guestFiles(t)
	h := openHVF(t)
	plan, err := vmm.Prepare(vmm.Config{
		Kernel: loader.Bytes(kernel), Initrd: loader.Bytes(rd), VCPUs: 1, MemoryMiB: 128, TrackDirtyPages: true,
		Cmdline: "console=ttyAMA0 panic=-1 squib.test=workload",
	})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dir := t.TempDir()
	files := func(name string) snapshot.Files {
		return snapshot.Files{State: filepath.Join(dir, name+".state"), Memory: filepath.Join(dir, name+".mem")}
	}
	var console syncBuffer
	in, typed := io.Pipe()
	m, err := vmm.New(h, plan, &console, log)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(in)
	waitConsole(t, &console, counterRE, 3)
	snap := func(name string, diff bool) {
		t.Helper()
		if err := m.Pause(); err != nil {
			t.Fatal(err)
		}
		if err := m.Snapshot(files(name), diff); err != nil {
			t.Fatalf("snapshot %s: %v", name, err)
		}
	}
	snap("base", false)
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(typed, "dirty 1")
	waitConsole(t, &console, patternRE, 2)
	n := len(counterRE.FindAllString(console.String(), -1))
	waitConsole(t, &console, counterRE, n+1)
	snap("d1", true)
	snap("ref", false)
	last := counterRE.FindAllStringSubmatch(console.String(), -1)
	from, _ := strconv.Atoi(last[len(last)-1][1])
	pattern := patternRE.FindAllStringSubmatch(console.String(), -1)[1][1]
	m.Stop()
	m.Wait()
	typed.Close()

	if _, err := snapshot.Merge(files("base"), []snapshot.Files{files("d1")}, files("merged")); err != nil {
		t.Fatal(err)
	}
	merged, ref := make([]byte, 128<<20), make([]byte, 128<<20)
	if err := snapshot.LoadMemory(files("merged").Memory, merged); err != nil {
		t.Fatal(err)
	}
	if err := snapshot.LoadMemory(files("ref").Memory, ref); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(merged, ref) {
		t.Error("base + diff merged differ from a full snapshot taken at the diff's moment")
	}

	for _, copyIn := range []bool{false, true} {
		t.Run(fmt.Sprintf("restore-copy=%v", copyIn), func(t *testing.T) {
			var console syncBuffer
			m, err := vmm.Restore(h, files("ref"), vmm.RestoreOptions{Power: psci.RestoreBSPOnly, CopyMemory: copyIn}, &console, log)
			if err != nil {
				t.Fatal(err)
			}
			m.Start(nil)
			defer func() { m.Stop(); m.Wait() }()
			waitConsole(t, &console, counterRE, 3)
			for i, c := range counterRE.FindAllStringSubmatch(console.String(), -1)[:3] {
				if got, _ := strconv.Atoi(c[1]); got != from+1+i || c[2] != pattern {
					t.Errorf("restored counter line %d: %q; want counter %d with checksum %s", i, c[0], from+1+i, pattern)
				}
			}
		})
	}
}
