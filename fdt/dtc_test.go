package fdt

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// runDTC runs dtc with args and input file in, and returns its stdout. It
// fails the test on a non-zero exit or on any output to stderr (warnings).
func runDTC(t *testing.T, in []byte, args ...string) []byte {
	t.Helper()
	dtc, err := exec.LookPath("dtc")
	if err != nil {
		t.Skip("dtc not found; install it with: apt-get install -y device-tree-compiler")
	}
	path := filepath.Join(t.TempDir(), "in.dtb")
	if err := os.WriteFile(path, in, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(dtc, append(args, path)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dtc %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	if stderr.Len() > 0 {
		t.Errorf("dtc %s warned:\n%s", strings.Join(args, " "), stderr.Bytes())
	}
	return stdout.Bytes()
}

func TestDTCDecompiles(t *testing.T) {
	dts := string(runDTC(t, virtBoardDTB(t), "-I", "dtb", "-O", "dts"))
	for _, want := range []string{
		"/memreserve/\t0x0000000048000000 0x0000000000200000;",
		"intc@8000000 {",
		`compatible = "arm,pl011\0arm,primecell";`,
		"interrupt-controller;",
		"reg = <0x00 0x8000000 0x00 0x10000 0x00 0x80a0000 0x00 0x40000>;",
	} {
		if !strings.Contains(dts, want) {
			t.Errorf("dtc output lacks %q:\n%s", want, dts)
		}
	}
}

// TestDTCReencodes has dtc rewrite the blob in its own layout and checks
// that Parse reads the same tree from both.
func TestDTCReencodes(t *testing.T) {
	ours := virtBoardDTB(t)
	theirs := runDTC(t, ours, "-I", "dtb", "-O", "dtb")
	a, ra, err := Parse(ours)
	if err != nil {
		t.Fatal(err)
	}
	b, rb, err := Parse(theirs)
	if err != nil {
		t.Fatalf("Parse(dtc output): %v", err)
	}
	if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(ra, rb) {
		t.Error("dtc's re-encoding parses to a different tree")
	}
}
