package api

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/psci"
	"github.com/squibvm/squib/snapshot"
)

// TestDuplicateKey checks which JSON values duplicateKey refuses, and how
// it names the key and where the object is.
func TestDuplicateKey(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`{"a": 1, "a": 2}`, "duplicate field `a`."},
		{`{"a": 1, "b": {"a": 2}, "c": [{"a": 3}, {"a": 4}], "d": {}, "e": []}`, ""},
		{`{"a": "a", "b": "a", "c": ["a", "a"]}`, ""}, // values are not keys
		{`{"a": {"b": {"c": 1, "c": 2}}}`, "duplicate field `c` in `a.b`."},
		{`{"a": [{"b": 1}, {"b": 2, "b": 3}]}`, "duplicate field `b` in `a[1]`."},
		{`{"a": [[], [{"x": 0}, {"y": 1, "y": 1}]]}`, "duplicate field `y` in `a[1][1]`."},
		{`[{"x": 1, "x": 1}]`, "duplicate field `x` in `[0]`."},
		{`{"vcpu_count": 1, "Vcpu_Count": 2}`, "duplicate field `Vcpu_Count` (also given as `vcpu_count`)."},
		{`{"k": 1, "\u212a": 2}`, "duplicate field `\u212a` (also given as `k`)."}, // the Kelvin sign folds to k, as in encoding/json
		{`{"a": 1, "b": [1, {"c": null}], "a"`, "duplicate field `a`."},            // refused before the end is seen
		{`{"a": 1, "b": 2,`, ""},          // malformed: decode says so
		{`{"a": 1} {"a": 1, "a": 2}`, ""}, // one value: decode refuses the rest
		{`"a"`, ""}, {`7`, ""}, {``, ""},
	} {
		err := duplicateKey([]byte(c.json))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v, want no error", c.json, err)
		case c.want != "" && (err == nil || err.Error() != deser+c.want):
			t.Errorf("%s: %v, want %q", c.json, err, deser+c.want)
		}
	}
	// encoding/json would take the last: decode refuses instead.
	var mc MachineConfig
	if err := decode([]byte(`{"vcpu_count": 1, "mem_size_mib": 128, "vcpu_count": 2}`), &mc, true); err == nil ||
		!strings.Contains(err.Error(), "duplicate field `vcpu_count`") {
		t.Errorf("decode of a duplicate key: %v, %+v", err, mc)
	}
	if _, err := ParseConfig([]byte(`{"machine-config": {"vcpu_count": 1, "mem_size_mib": 128, "mem_size_mib": 256}}`)); err == nil ||
		err.Error() != deser+"duplicate field `mem_size_mib` in `machine-config`." {
		t.Errorf("ParseConfig of a nested duplicate key: %v", err)
	}
}

// TestSnapshotLoadFilesFirst checks that a snapshot load reads and checks
// the files before it opens the hypervisor: a damaged file is reported as
// such, with the hypervisor not even opened, and only sound files get as
// far as a missing hypervisor.
func TestSnapshotLoadFilesFirst(t *testing.T) {
	opened := 0
	ctl := NewController(Options{Log: io.Discard, OpenHypervisor: func() (hv.Hypervisor, error) {
		opened++
		return nil, hv.ErrNoHypervisor
	}})
	defer ctl.Close()
	good := writeSnapshot(t, t.TempDir())
	dir := filepath.Dir(good.State)
	b, err := os.ReadFile(good.State)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-20] ^= 1
	bad := filepath.Join(dir, "bad.state")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	load := func(state string) error {
		file := "File"
		return ctl.snapshotLoad(SnapshotLoad{SnapshotPath: &state, MemBackend: &MemBackend{BackendType: &file, BackendPath: &good.Memory}})
	}
	if err := load(bad); err == nil || !strings.Contains(err.Error(), bad+": checksum mismatch") || opened != 0 {
		t.Errorf("load of a damaged state file: %v, with the hypervisor opened %d times", err, opened)
	}
	if err := load(good.State); err == nil || !strings.Contains(err.Error(), "no usable hypervisor") || opened != 1 {
		t.Errorf("load of sound files without a hypervisor: %v, with the hypervisor opened %d times", err, opened)
	}
}

// writeSnapshot writes a sound snapshot of a 1-vCPU, 1 MiB microVM into dir.
func writeSnapshot(t *testing.T, dir string) snapshot.Files {
	t.Helper()
	f := snapshot.Files{State: filepath.Join(dir, "vm.state"), Memory: filepath.Join(dir, "vm.mem")}
	st := &snapshot.State{
		Header: snapshot.Header{Backend: gic.BackendKVM, RAMBase: 0x4000_0000, RAMSize: 1 << 20},
		Machine: snapshot.Machine{
			Config: snapshot.Config{VCPUs: 1, MemoryMiB: 1},
			GIC:    gic.State{Backend: gic.BackendKVM, Blob: []byte{1}, ICC: make([]gic.ICCRegs, 1)},
			VCPUs:  []snapshot.VCPU{{MPIDR: 1 << 31, Power: psci.On}},
		},
	}
	if err := snapshot.Create(f, st, make([]byte, 1<<20), snapshot.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return f
}
