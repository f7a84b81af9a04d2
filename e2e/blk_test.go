package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/lab"
)

// TestBlk runs the virtio-blk scenarios of testdata in one L1 per page
// size:
//
//   - blk.sh: a guest with two drives, a writable one (vda, GET_ID's serial
//     disk0) and a read-only one (vdb), writes a pattern to vda and reads
//     the drive back; L1's image then holds the pattern and has the
//     checksum the guest read. The guest's write to vdb fails, and the
//     read-only image is byte-identical afterwards and as the guest read it.
//   - rootfs.sh: a guest boots from the ext4 root drive alone, writes a
//     file and powers off; L1's e2fsck finds the image clean and debugfs
//     reads the file out of it as the guest wrote it.
//   - diskloop.sh: a snapshot of a guest in a disk loop, restored in two
//     clones, each on its own copy of the image: both loops go on with every
//     checksum right.
//   - diffread.sh: pages squibd's virtio-blk wrote into guest RAM after a
//     full snapshot are in the diff snapshot that follows: restored from
//     the two merged onto a zeroed medium (PATCH /drives), the guest reads
//     the drive's random bytes from its page cache, and the zeros once it
//     flushes that cache.
//   - hostile.sh: a guest program (lab/prog/hostile.c) takes a drive from Linux
//     and feeds it malformed chains and rings; squibd stays up, answers each
//     as virtio asks, logs each kind once, and the other drive works on.
func TestBlk(t *testing.T) {
	lab.Require(t)
	files := labFiles(t)
	for _, ps := range []lab.PageSize{lab.Page4K, lab.Page16K} {
		t.Run(fmt.Sprintf("%dK", ps), func(t *testing.T) {
			cmds := []lab.Command{
				{Name: "blk", Args: []string{"/bin/sh", "/e2e/blk.sh"}},
				{Name: "rootfs", Args: []string{"/bin/sh", "/e2e/rootfs.sh"}},
				{Name: "diskloop", Args: []string{"/bin/sh", "/e2e/diskloop.sh"}},
				{Name: "diffread", Args: []string{"/bin/sh", "/e2e/diffread.sh"}},
				{Name: "hostile", Args: []string{"/bin/sh", "/e2e/hostile.sh"}},
			}
			rs := lab.Run(t, lab.Options{PageSize: ps, Files: files, Timeout: 25 * time.Minute, Commands: cmds})
			checks := []func(*testing.T, string){checkBlk, checkRootfs, checkDiskLoop, checkDiffRead, checkHostile}
			for i, r := range rs {
				t.Run(r.Name, func(t *testing.T) {
					if r.ExitCode != 0 {
						t.Fatalf("%s: exit status %d (%s)\n%s", r.Name, r.ExitCode, why(r.Output), r.Output)
					}
					checks[i](t, r.Output)
				})
			}
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
	logMarked(t, out, "SQUIB-GUEST-BLK", "HOST ")
}

// logMarked logs out's lines that start with one of prefixes, or all of it
// if the test failed.
func logMarked(t *testing.T, out string, prefixes ...string) {
	if t.Failed() {
		t.Logf("output:\n%s", out)
		return
	}
	for _, l := range strings.Split(out, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				t.Log(strings.TrimRight(l, "\r"))
				break
			}
		}
	}
}

func checkRootfs(t *testing.T, out string) {
	root, w, host := fields(out, "SQUIB-GUEST-ROOTFS"), fields(out, "SQUIB-GUEST-ROOTFS-WRITTEN"), fields(out, "HOST")
	switch {
	case root == nil || w == nil || host == nil:
		t.Errorf("missing lines: root %v, written %v, L1 %v", root, w, host)
	case root["type"] != "ext4" || !strings.HasPrefix(root["opts"], "rw"):
		t.Errorf("the guest's / is %v, want the ext4 drive, read-write", root)
	case !strings.Contains(root["cmdline"], "root=/dev/vda,rw") || strings.Contains(root["cmdline"], "initrd"):
		t.Errorf("the guest's command line is %q, want root=/dev/vda rw", root["cmdline"])
	case host["fsck"] != "0":
		t.Errorf("e2fsck of the image the guest wrote exited %s, want 0 (clean)", host["fsck"])
	case host["size"] != "262144" || host["written"] != w["md5"]:
		t.Errorf("the guest wrote /written with md5 %s (%s bytes), the image holds %s (%s bytes)", w["md5"], w["size"], host["written"], host["size"])
	}
	logMarked(t, out, "SQUIB-GUEST-ROOTFS", "HOST ", "FSCK ")
}

func checkDiskLoop(t *testing.T, out string) {
	before, host := fields(out, "BEFORE"), fields(out, "HOST")
	if before == nil || host == nil {
		t.Fatalf("missing lines: before %v, L1 %v", before, host)
	}
	n, err := strconv.Atoi(before["n"])
	if err != nil || n < 4 {
		t.Fatalf("the loop's round at the snapshot: %q, want 4 or more", before["n"])
	}
	for _, x := range []string{"b", "c"} {
		var want []string
		for i := n + 1; i <= n+5; i++ {
			want = append(want, fmt.Sprintf("n=%d:ok=4:bad=0", i))
		}
		if got := fields(out, "AFTER "+x)["rounds"]; got != strings.Join(want, ",")+"," {
			t.Errorf("clone %s's first rounds: %s, want %s", x, got, strings.Join(want, ","))
		}
	}
	switch {
	case host["snapshot_image"] != host["at_snapshot"]:
		t.Errorf("the image the snapshot named changed after the clones moved off it: %s, then %s", host["at_snapshot"], host["snapshot_image"])
	case host["b"] == host["at_snapshot"] || host["c"] == host["at_snapshot"] || host["b"] == host["c"]:
		t.Errorf("each clone must have written its own copy: snapshot %s, b %s, c %s", host["at_snapshot"], host["b"], host["c"])
	}
	logMarked(t, out, "BEFORE", "AFTER", "HOST ")
}

func checkDiffRead(t *testing.T, out string) {
	host := fields(out, "HOST")
	switch {
	case host == nil:
		t.Errorf("no HOST line")
	case host["before"] != host["image"]:
		t.Errorf("the guest read the drive as %s before the diff snapshot; the image is %s", host["before"], host["image"])
	case host["restored"] == host["zero"]:
		t.Errorf("restored from base + diff, the guest read the drive from its new, zeroed medium, not from its page cache: the test proves nothing")
	case host["restored"] != host["image"]:
		t.Errorf("restored from base + diff, the guest's page cache holds the drive as %s, not %s: squibd's own writes to guest RAM are missing from the diff", host["restored"], host["image"])
	case host["flushed"] != host["zero"]:
		t.Errorf("with its cache flushed, the restored guest read the drive as %s, not as its new medium's zeros (%s): PATCH /drives did not reach it", host["flushed"], host["zero"])
	}
	logMarked(t, out, "DIFF", "HOST ")
}

// hostileWant is what squibd answers each of lab/prog/hostile.c's cases with
// (virtio 1.2 §2.7.5.3.2, §2.1.2): a malformed chain comes back unused (used
// len 0, the request's status byte unwritten: 255) with the device working
// on; a request whose buffers are well-formed but wrong for it (an IN into
// a device-readable buffer) is answered IOERR (1); a corrupt ring (a head
// outside the table, an avail index too far ahead) sets DEVICE_NEEDS_RESET;
// after a reset, a good read works.
var hostileWant = map[string]string{
	"loop":            "devstatus=0x0f used=0 result=answered reqstatus=255",
	"outside":         "devstatus=0x0f used=0 result=answered reqstatus=255",
	"huge":            "devstatus=0x0f used=0 result=answered reqstatus=255",
	"nested-indirect": "devstatus=0x0f used=0 result=answered reqstatus=255",
	"readonly-write":  "devstatus=0x0f used=1 result=answered reqstatus=1",
	"badhead":         "devstatus=0x4f used=- result=needs-reset",
	"badidx":          "devstatus=0x4f used=- result=needs-reset",
	"good":            "devstatus=0x0f used=513 result=answered reqstatus=0",
}

func checkHostile(t *testing.T, out string) {
	host, after := fields(out, "HOST"), fields(out, "SQUIB-GUEST-HOSTILE-AFTER")
	if host == nil || after == nil {
		t.Fatalf("missing lines: L1 %v, after %v", host, after)
	}
	for name, want := range hostileWant {
		line := lineAfter(out, "SQUIB-GUEST-HOSTILE case="+name)
		if name == "good" {
			want += " data=" + host["hostile_head"]
		}
		if line != want {
			t.Errorf("case %s: %q, want %q", name, line, want)
		}
	}
	if after["vda"] != after["wrote"] || after["vda"] != host["vda_head"] {
		t.Errorf("the other drive after the hostile cases: the guest wrote %s, read back %s; the image holds %s", after["wrote"], after["vda"], host["vda_head"])
	}
	// One line per kind of misbehaviour: the three malformed chains
	// (outside and huge are one kind: not in RAM) and the two resets.
	if host["warns"] != "5" {
		t.Errorf("squibd logged %s warnings, want 5: one per kind of misbehaviour", host["warns"])
	}
	logMarked(t, out, "SQUIB-GUEST-HOSTILE", "HOST ", "time=")
}
