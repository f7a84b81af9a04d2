package gic

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/squibvm/squib/fdt"
)

// gicTree returns a minimal tree whose root routes interrupts to the GIC.
func gicTree(t *testing.T, vcpus int) []byte {
	t.Helper()
	l, err := NewLayout(vcpus)
	if err != nil {
		t.Fatal(err)
	}
	b := fdt.New()
	gic := b.Phandle()
	b.Begin("")
	b.PropU32("#address-cells", 2)
	b.PropU32("#size-cells", 2)
	b.PropU32("interrupt-parent", gic)
	l.WriteFDT(b, gic)
	b.End()
	dtb, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return dtb
}

func TestWriteFDT(t *testing.T) {
	root, _, err := fdt.Parse(gicTree(t, 4))
	if err != nil {
		t.Fatal(err)
	}
	n := root.Child("intc@8000000")
	if n == nil {
		t.Fatal("no /intc@8000000 node")
	}
	if got, _ := n.Strings("compatible"); !reflect.DeepEqual(got, []string{"arm,gic-v3"}) {
		t.Errorf("compatible = %q", got)
	}
	for _, p := range []string{"interrupt-controller", "ranges"} {
		if v, ok := n.Props[p]; !ok || len(v) != 0 {
			t.Errorf("%s = %x, %t; want empty and present", p, v, ok)
		}
	}
	for p, want := range map[string][]uint32{
		"#interrupt-cells":       {3},
		"#address-cells":         {2},
		"#size-cells":            {2},
		"#redistributor-regions": {1},
		"interrupts":             {1, 9, 4},
		"phandle":                {1},
	} {
		if got, _ := n.U32(p); !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %v, want %v", p, got, want)
		}
	}
	if got, _ := n.U64("reg"); !reflect.DeepEqual(got, []uint64{0x08000000, 0x10000, 0x080a0000, 4 * 0x20000}) {
		t.Errorf("reg = %#x", got)
	}
}

func TestWriteFDTDTCClean(t *testing.T) {
	dtc, err := exec.LookPath("dtc")
	if err != nil {
		t.Skip("dtc not found; install it with: apt-get install -y device-tree-compiler")
	}
	path := filepath.Join(t.TempDir(), "gic.dtb")
	if err := os.WriteFile(path, gicTree(t, 2), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(dtc, "-I", "dtb", "-O", "dts", "-o", os.DevNull, path)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("dtc: %v\n%s", err, stderr.Bytes())
	}
}
