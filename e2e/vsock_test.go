package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/lab"
)

// TestVsock runs testdata/vsock.sh in one L1 per page size: virtio-vsock
// with Firecracker's hybrid vsock, from a guest configured with "vsock" in
// --config-file. 50 host-initiated streams at once each get their 1 MiB
// back from the guest's echo server; a guest-initiated stream to host port
// 5001 delivers its 1 MiB to UDS_5001 whole; a stream whose host reader
// stops leaves another working. After a snapshot, a restore onto the
// socket the source holds is refused naming vsock_override, one with its
// own socket runs: the guest's old connection is reset, a new stream and a
// guest-initiated one work on the new socket at once, and the socket is
// gone when squibd ends.
func TestVsock(t *testing.T) {
	lab.Require(t)
	files := labFiles(t)
	for _, ps := range []lab.PageSize{lab.Page4K, lab.Page16K} {
		t.Run(fmt.Sprintf("%dK", ps), func(t *testing.T) {
			rs := lab.Run(t, lab.Options{PageSize: ps, Files: files, Timeout: 30 * time.Minute,
				Commands: []lab.Command{{Name: "vsock", Args: []string{"/bin/sh", "/e2e/vsock.sh"}}}})
			r := rs[0]
			if r.ExitCode != 0 {
				t.Fatalf("exit status %d (%s)\n%s", r.ExitCode, why(r.Output), r.Output)
			}
			checkVsock(t, r.Output)
		})
	}
}

func checkVsock(t *testing.T, out string) {
	for name, uds := range map[string]string{"a": "/tmp/a.vsock", "b": "/tmp/b.vsock"} {
		if got, want := lineAfter(out, "CONFIG "+name), `"vsock":{"guest_cid":3,"uds_path":"`+uds+`"}`; got != want {
			t.Errorf("GET /vm/config of %s: %q, want %q", name, got, want)
		}
	}
	if e := fields(out, "ECHO VSOCK"); e["streams"] != "50" || e["ok"] != "50" || e["bytes"] != "52428800" {
		t.Errorf("50 host streams of 1 MiB: %v, want all echoed", e)
	}
	for name, size := range map[string]string{"a": "1048576", "b": "65536"} {
		g, l := fields(out, "GUEST "+name), fields(out, "LISTEN "+name)
		switch {
		case g == nil || l == nil:
			t.Errorf("%s: guest-initiated stream: guest %v, host %v", name, g, l)
		case g["sent"] != size || l["bytes"] != size || g["sum"] != l["sum"] || l["pattern"] != "yes":
			t.Errorf("%s: the guest sent %v, the host's UDS_5001 got %v; want %s bytes of the pattern, same sum", name, g, l, size)
		}
	}
	s := fields(out, "STALL VSOCK-STALL")
	sent, _ := strconv.Atoi(s["stalled_sent"])
	if s["other"] != "ok" || s["stalled"] != "ok" || sent == 0 || s["total"] == "" || strconv.Itoa(sent) == s["total"] {
		t.Errorf("stalled stream: %v, want it stuck part way, the other stream echoed meanwhile, and then all of its own back", s)
	}
	if h := lineAfter(out, "HOLD a"); !strings.HasPrefix(h, "open host_port=") {
		t.Errorf("held stream: %q", h)
	}
	if r := fields(out, "RESETS a"); r["before"] != "0" {
		t.Errorf("connections that ended in an error before the snapshot: %v, want none", r)
	}
	if d := lineAfter(out, "DESCRIBE"); !strings.Contains(d, `"virtio-vsock"`) {
		t.Errorf("describe does not list the device: %q", d)
	}
	if m := lineAfter(out, "SAME-UDS"); !strings.Contains(m, "/tmp/a.vsock") || !strings.Contains(m, "vsock_override") {
		t.Errorf("a restore onto the source's socket: %q, want it refused naming the socket and vsock_override", m)
	}
	if a := fields(out, "AFTER VSOCK"); a["streams"] != "1" || a["ok"] != "1" {
		t.Errorf("a new stream on the restored guest: %v", a)
	}
	if r := fields(out, "RESET b"); r["error"] == "" || !strings.HasPrefix(r["peer"], "2:") {
		t.Errorf("the restored guest's old connection: %v, want its echo ended by an error", r)
	}
	if g := fields(out, "GONE"); g["b"] != "yes" {
		t.Errorf("the restored squibd's socket after it ended: %v", g)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
		return
	}
	logMarked(t, out, "CONFIG ", "ECHO ", "GUEST ", "LISTEN ", "STALL ", "HOLD ", "RESET", "SAME-UDS ", "AFTER ", "GONE ")
}
