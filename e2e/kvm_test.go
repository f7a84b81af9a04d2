package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/squibvm/squib/lab"
)

// TestKVMBackend runs the kvm package's own tests (hand-encoded guest
// programs: every exit kind, vCPU and vGIC state save/restore into a new
// VM, dirty tracking) on the lab's real KVM, 4 KiB and 16 KiB host pages:
// they are cross-compiled here and run inside L1. Each must have passed by
// name, so a test that skipped or vanished fails this one.
func TestKVMBackend(t *testing.T) {
	lab.Require(t)
	bin := filepath.Join(t.TempDir(), "kvm.test")
	build := exec.Command("go", "test", "-c", "-o", bin, "github.com/squibvm/squib/kvm")
	build.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("cross-compiling the kvm tests: %v\n%s", err, out)
	}
	for _, ps := range []lab.PageSize{lab.Page4K, lab.Page16K} {
		r := lab.Run(t, lab.Options{PageSize: ps, Files: map[string]string{"/kvm.test": bin},
			Commands: []lab.Command{{Name: "kvm-tests", Args: []string{"/kvm.test", "-test.v", "-test.count=1"}}}})[0]
		passed := true
		for _, name := range []string{"TestExits", "TestPowerOnResets", "TestStateSaveRestore", "TestGICTwoVCPUs",
			"TestRestoreGICRefuses", "TestDirtyTracking", "TestVCPUsInOrder"} {
			passed = passed && strings.Contains(r.Output, "--- PASS: "+name+" ")
		}
		if r.ExitCode != 0 || !passed || strings.Contains(r.Output, "SKIP") {
			t.Errorf("%dK: kvm tests exited %d\n%s", ps, r.ExitCode, r.Output)
		}
	}
}
