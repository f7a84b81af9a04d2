package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/lab"
)

// rngRead matches what the guest's rngread prints for 4 KiB read from
// /dev/hwrng: its first 16 bytes and its checksum.
var rngRead = regexp.MustCompile(`SQUIB-GUEST-RNG=([0-9a-f]{32}) bytes=4096 sum=([0-9a-f]{32})`)

// TestRNG runs the entropy device's scenarios in one L1 per page size: a
// guest booted with --rng has virtio-rng as its /dev/hwrng and reads 4 KiB
// from it (rng); one booted without has no virtio-rng source (no-rng; KVM's
// SMCCC TRNG may serve /dev/hwrng then); and rng.sh: a guest configured with "entropy" in
// --config-file reads from it, is snapshotted, restored and snapshotted
// again to the same snapshot, and reads from it again.
func TestRNG(t *testing.T) {
	lab.Require(t)
	files := labFiles(t)
	for _, ps := range []lab.PageSize{lab.Page4K, lab.Page16K} {
		t.Run(fmt.Sprintf("%dK", ps), func(t *testing.T) {
			rs := lab.Run(t, lab.Options{PageSize: ps, Files: files, Timeout: 10 * time.Minute, Commands: []lab.Command{
				{Name: "rng", Args: guestRun("rng", "--rng")},
				{Name: "no-rng", Args: guestRun("rng")},
				{Name: "snapshot", Args: []string{"/bin/sh", "/e2e/rng.sh"}},
			}})
			for _, r := range rs {
				if r.ExitCode != 0 {
					t.Errorf("%s: exit status %d (%s)\n%s", r.Name, r.ExitCode, why(r.Output), r.Output)
				}
			}
			if t.Failed() {
				return
			}
			if out := rs[0].Output; !strings.Contains(out, "SQUIB-GUEST-RNG-SOURCE=virtio_rng.0") || !rngRead.MatchString(out) {
				t.Errorf("rng: the guest did not read 4 KiB from virtio-rng\n%s", out)
			} else {
				t.Log(rngRead.FindString(out))
			}
			// Without the device the guest may still have a source: KVM
			// offers the SMCCC TRNG service (smccc_trng), the lab's L1 too.
			if out := rs[1].Output; strings.Contains(out, "SQUIB-GUEST-RNG-SOURCE=virtio_rng") || !strings.Contains(out, "SQUIB-GUEST-RNG-SOURCE=") {
				t.Errorf("no-rng: want a source other than virtio-rng, or none\n%s", out)
			}
			checkRNGSnapshot(t, rs[2].Output)
		})
	}
}

func checkRNGSnapshot(t *testing.T, out string) {
	for _, k := range []string{"CONFIG a", "CONFIG b"} {
		if got := strings.TrimSpace(lineAfter(out, k)); got != `"entropy":{"rate_limiter":null}` {
			t.Errorf("%s: GET /vm/config shows %q, want the device", k, got)
		}
	}
	if d := lineAfter(out, "DESCRIBE"); !strings.Contains(d, `"virtio-rng"`) {
		t.Errorf("describe does not list the device: %q", d)
	}
	if r := lineAfter(out, "ROUNDTRIP"); r != "result=SAME" {
		t.Errorf("the restored snapshot, saved again, differs: %q", r)
	}
	a, b := rngRead.FindStringSubmatch(lineAfter(out, "RNG a")), rngRead.FindStringSubmatch(lineAfter(out, "RNG b"))
	switch {
	case a == nil || b == nil:
		t.Errorf("reads from /dev/hwrng before (%q) and after (%q) the restore; want 4 KiB each", lineAfter(out, "RNG a"), lineAfter(out, "RNG b"))
	case a[2] == b[2]:
		t.Errorf("the restored guest read the same 4 KiB as before the snapshot: %s", a[2])
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
		return
	}
	for _, l := range markerLine.FindAllString(out, -1) {
		t.Log(l)
	}
}

// lineAfter returns the rest of out's first line that starts with prefix
// and a space, or "".
func lineAfter(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, prefix+" "); ok {
			return strings.TrimRight(rest, "\r")
		}
	}
	return ""
}
