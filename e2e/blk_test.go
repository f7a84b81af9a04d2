package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/lab"
)

// TestBlk runs testdata/blk.sh in one L1 per page size: a guest with two
// virtio-blk drives, a writable one (vda, GET_ID's serial disk0) and a
// read-only one (vdb), writes a pattern to vda and reads the drive back;
// L1's image then holds the pattern and has the checksum the guest read. The guest's write to
// vdb fails, and the read-only image is byte-identical afterwards and as
// the guest read it.
func TestBlk(t *testing.T) {
	lab.Require(t)
	files := labFiles(t)
	for _, ps := range []lab.PageSize{lab.Page4K, lab.Page16K} {
		t.Run(fmt.Sprintf("%dK", ps), func(t *testing.T) {
			rs := lab.Run(t, lab.Options{PageSize: ps, Files: files, Timeout: 10 * time.Minute, Commands: []lab.Command{
				{Name: "blk", Args: []string{"/bin/sh", "/e2e/blk.sh"}},
			}})
			out := rs[0].Output
			if rs[0].ExitCode != 0 {
				t.Fatalf("blk: exit status %d (%s)\n%s", rs[0].ExitCode, why(out), out)
			}
			checkBlk(t, out)
		})
	}
}

func checkBlk(t *testing.T, out string) {
	vda, vdb := fields(out, "SQUIB-GUEST-BLK-DEV vda"), fields(out, "SQUIB-GUEST-BLK-DEV vdb")
	if vda["size"] != "16384" || vda["ro"] != "0" || vda["serial"] != "disk0" {
		t.Errorf("vda as the guest sees it: %v, want 16384 sectors, writable, serial disk0", vda)
	}
	if vdb["size"] != "8192" || vdb["ro"] != "1" || vdb["serial"] != "disk1" {
		t.Errorf("vdb as the guest sees it: %v, want 8192 sectors, read-only, serial disk1", vdb)
	}
	w, host := fields(out, "SQUIB-GUEST-BLK-WRITE"), fields(out, "HOST")
	switch {
	case w == nil || host == nil:
		t.Errorf("no checksums from the guest (%v) or L1 (%v)", w, host)
	case w["pattern"] != host["head"]:
		t.Errorf("the guest wrote %s to vda's first MiB, but L1's image has %s there", w["pattern"], host["head"])
	case w["vda"] != host["disk"] || host["size"] != "8388608":
		t.Errorf("the guest read vda as %s, but L1's image (%s bytes) is %s", w["vda"], host["size"], host["disk"])
	case host["ro_before"] != host["ro_after"]:
		t.Errorf("the read-only image changed: %s, then %s", host["ro_before"], host["ro_after"])
	case strings.TrimSpace(fields(out, "SQUIB-GUEST-BLK-RODISK")["vdb"]) != host["ro_before"]:
		t.Errorf("the guest read vdb as %v, but the image is %s", fields(out, "SQUIB-GUEST-BLK-RODISK"), host["ro_before"])
	}
	if ro := lineAfter(out, "SQUIB-GUEST-BLK-RO"); !strings.HasPrefix(ro, "refused: ") {
		t.Errorf("the guest's write to the read-only drive: %q, want it refused", ro)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
		return
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "SQUIB-GUEST-BLK") || strings.HasPrefix(l, "HOST ") {
			t.Log(strings.TrimRight(l, "\r"))
		}
	}
}
