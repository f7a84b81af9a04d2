//go:build darwin && arm64

package hvf_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/squibvm/squib/loader"
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

// Environment of a clone process (TestClone, run by runClones).
const (
	cloneState = "SQUIB_CLONE_STATE"
	cloneMem   = "SQUIB_CLONE_MEM"
)

// runClones restores snapshot f in two processes side by side (a process
// holds one VM): each is this signed test binary running TestClone, both
// started before either is waited for. Both must continue the counter
// from from with the memory pattern intact.
func runClones(t *testing.T, f snapshot.Files, from int, pattern string) {
	var outs [2]bytes.Buffer
	var cmds [2]*exec.Cmd
	for i := range cmds {
		cmds[i] = exec.Command(os.Args[0], "-test.run=^TestClone$", "-test.v")
		cmds[i].Env = append(os.Environ(), cloneState+"="+f.State, cloneMem+"="+f.Memory)
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("clone %d: %v\n%s", i, err, outs[i].String())
		}
	}
	for i := range outs {
		got := counterRE.FindAllStringSubmatch(outs[i].String(), -1)
		if len(got) < 3 {
			t.Fatalf("clone %d printed %d counter lines:\n%s", i, len(got), outs[i].String())
		}
		for j, c := range got[:3] {
			if n, _ := strconv.Atoi(c[1]); n != from+1+j || c[2] != pattern {
				t.Errorf("clone %d line %d: %q; want counter %d with checksum %s", i, j, c[0], from+1+j, pattern)
			}
		}
	}
}

// TestClone is one clone of runClones: it restores the snapshot the
// environment names, lets it run for 6 counter lines, and prints its
// console. Without the environment it skips.
func TestClone(t *testing.T) {
	st, mem := os.Getenv(cloneState), os.Getenv(cloneMem)
	if st == "" || mem == "" {
		t.Skip("runs as a clone process of TestSnapshotScenarios")
	}
	h := openHVF(t)
	var console syncBuffer
	m, err := vmm.Restore(h, snapshot.Files{State: st, Memory: mem}, vmm.RestoreOptions{}, &console,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	m.Start(nil)
	waitConsole(t, &console, counterRE, 6)
	m.Stop()
	m.Wait()
	fmt.Print(console.String())
}

// TestSnapshotScenarios runs the lab's snapshot scenarios on
// Hypervisor.framework with the lab guest's workload (lab/guest-init):
// a full snapshot and a diff of a running guest (dirty pages tracked by
// write protection), merged into the same RAM as a full snapshot taken at
// the diff's moment; that snapshot restored, mapped copy-on-write and
// copied in, continues the counter with its memory pattern intact (one
// VM per process, so these restores run one after the other), and two
// clone processes restore it side by side.
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
		if _, err := m.Snapshot(files(name), diff); err != nil {
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

	t.Run("clones", func(t *testing.T) { runClones(t, files("ref"), from, pattern) })

	for _, copyIn := range []bool{false, true} {
		t.Run(fmt.Sprintf("restore-copy=%v", copyIn), func(t *testing.T) {
			var console syncBuffer
			m, err := vmm.Restore(h, files("ref"), vmm.RestoreOptions{CopyMemory: copyIn}, &console, log)
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
