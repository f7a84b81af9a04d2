package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/lab"
)

// TestNetHostile runs testdata/nethostile.sh in one L1 (4 KiB pages: the
// devices' checks do not depend on the host's page size): a guest program
// (lab/prog/hostile.c) takes a virtio-net interface and the virtio-vsock
// device from Linux and feeds them malformed frames and packets. squibd
// stays up and answers each case as the device code and virtio 1.2 §5.1
// and §5.10 say (netHostileWant), logs each kind of misbehaviour once, and
// works on: the hostile device's own well-formed ARP request and vsock
// streams get their answers, the bytes of one stream reach the host's
// listener, and the guest's other interface takes its DHCP lease and
// fetches 1 MiB through the NAT intact.
func TestNetHostile(t *testing.T) {
	lab.Require(t)
	rs := lab.Run(t, lab.Options{PageSize: lab.Page4K, Files: labFiles(t), Timeout: 20 * time.Minute,
		Commands: []lab.Command{{Name: "nethostile", Args: []string{"/bin/sh", "/e2e/nethostile.sh"}}}})
	r := rs[0]
	if r.ExitCode != 0 {
		t.Fatalf("exit status %d (%s)\n%s", r.ExitCode, why(r.Output), r.Output)
	}
	checkNetHostile(t, r.Output)
}

// hostileMsg is what the guest's stream to host port 5001 carries
// (hostile.c's hello).
const hostileMsg = "hello from the hostile guest\n"

// netHostileWant is how squibd answers each of lab/prog/hostile.c's net
// and vsock cases, after "case=NAME devstatus=0x0f" (the device working
// throughout: no case is a reason for DEVICE_NEEDS_RESET). Every
// transmitted chain comes back (tx=0: the device writes nothing into it).
//
// virtio-net: a transmitted chain shorter than the header, or asking for
// a checksum or segmentation offload the device did not offer, or longer
// than 65562 bytes, is dropped; a header-only frame and a truncated ARP
// message reach the user-mode network, which has nothing to answer. A
// received frame longer than the receive buffer is dropped and the buffer
// given back unused (rx=0). The good ARP request gets the gateway's reply
// (42 bytes after the 12-byte header) in the buffer the malformed cases
// left alone.
//
// virtio-vsock: a chain shorter than the header or than its len, a len
// over 64 KiB, a packet not from the guest's CID or not to the host's is
// dropped; a packet of another type than stream, of an unknown op, or for
// no connection (an RW, a REQUEST claiming received data) is answered with
// RST; on an open connection an unknown op is dropped, a huge buf_alloc is
// the guest's to give, and a fwd_cnt beyond what the device sent resets
// the connection. A REQUEST to a port with a listener gets RESPONSE (and
// the device's 256 KiB buf_alloc), a CREDIT_REQUEST a CREDIT_UPDATE, a
// SHUTDOWN of both directions an RST once the 29 bytes sent are written
// to the host (fwd_cnt 29); a REQUEST to a port nobody listens on, RST.
var netHostileWant = []struct{ name, answer string }{
	{"rx-short", "tx=0 rx=0"},
	{"tx-short", "tx=0 rx=none"},
	{"tx-header-only", "tx=0 rx=none"},
	{"tx-arp-truncated", "tx=0 rx=none"},
	{"tx-csum", "tx=0 rx=none"},
	{"tx-gso", "tx=0 rx=none"},
	{"tx-long", "tx=0 rx=none"},
	{"good", "tx=0 rx=54 arp=reply sender=5a:94:ef:e4:0c:dd/192.168.127.1"},

	{"short-header", "tx=0 rx=none"},
	{"len-beyond-chain", "tx=0 rx=none"},
	{"len-over-64k", "tx=0 rx=none"},
	{"wrong-src-cid", "tx=0 rx=none"},
	{"wrong-dst-cid", "tx=0 rx=none"},
	{"not-stream", "tx=0 rx=rst used=44 from=2:5001 to=3:1024 len=0 buf_alloc=0 fwd_cnt=0"},
	{"unknown-op", "tx=0 rx=rst used=44 from=2:5001 to=3:1024 len=0 buf_alloc=0 fwd_cnt=0"},
	{"rw-unopened", "tx=0 rx=rst used=44 from=2:5001 to=3:1024 len=0 buf_alloc=0 fwd_cnt=0"},
	{"request-fwd-cnt", "tx=0 rx=rst used=44 from=2:5001 to=3:1024 len=0 buf_alloc=0 fwd_cnt=0"},
	{"connect", "tx=0 rx=response used=44 from=2:5001 to=3:1025 len=0 buf_alloc=262144 fwd_cnt=0"},
	{"unknown-op-open", "tx=0 rx=none"},
	{"buf-alloc-lie", "tx=0 rx=none"},
	{"credit-request", "tx=0 rx=credit_update used=44 from=2:5001 to=3:1025 len=0 buf_alloc=262144 fwd_cnt=0"},
	{"rw", "tx=0 rx=none"},
	{"shutdown", "tx=0 rx=rst used=44 from=2:5001 to=3:1025 len=0 buf_alloc=262144 fwd_cnt=29"},
	{"connect2", "tx=0 rx=response used=44 from=2:5002 to=3:1026 len=0 buf_alloc=262144 fwd_cnt=0"},
	{"fwd-cnt-lie", "tx=0 rx=rst used=44 from=2:5002 to=3:1026 len=0 buf_alloc=262144 fwd_cnt=0"},
	{"no-listener", "tx=0 rx=rst used=44 from=2:5003 to=3:1027 len=0 buf_alloc=262144 fwd_cnt=0"},
}

// netHostileWarns are squibd's WARN lines for the cases, one per kind of
// misbehaviour and device (tx-gso is tx-csum's kind; the other answered
// cases are routine): each must be in exactly one line, and there must be
// no other.
var netHostileWarns = []string{
	`msg="net: frame longer than the guest's receive buffer dropped"`,
	`msg="net: transmitted chain shorter than the 12-byte header dropped"`,
	`msg="net: a frame the backend refused dropped"`, // tx-header-only: no Ethernet header for the network
	`msg="net: transmitted frame asking for an offload the device did not offer dropped"`,
	`msg="net: transmitted frame longer than 65562 bytes dropped"`,
	`reason="packet shorter than its 44-byte header"`,
	`reason="packet payload longer than its chain"`,
	`reason="packet payload over 64 KiB"`,
	`reason="packet from a CID other than the guest's"`,
	`reason="packet for a CID other than the host's"`,
	`msg="vsock: packet of a type other than stream answered with RST"`,
	`msg="vsock: connection request claiming received data answered with RST"`,
	`msg="vsock: unexpected packet dropped: unknown op"`,
	`msg="vsock: guest claims to have consumed bytes never sent: connection reset"`,
}

func checkNetHostile(t *testing.T, out string) {
	for _, c := range netHostileWant {
		want := "devstatus=0x0f " + c.answer
		if got := lineAfter(out, "SQUIB-GUEST-HOSTILE case="+c.name); got != want {
			t.Errorf("case %s: %q, want %q", c.name, got, want)
		}
	}
	for _, kind := range []string{"net", "vsock"} {
		if got := lineAfter(out, "SQUIB-GUEST-HOSTILE-EXIT "+kind); got != "status=0" {
			t.Errorf("hostile %s: %q, want status=0", kind, got)
		}
	}
	if mac := fields(out, "SQUIB-GUEST-HOSTILE device=net")["mac"]; mac != "06:00:ac:10:00:02" {
		t.Errorf("the hostile interface's MAC is %q, want eth1's, 06:00:ac:10:00:02", mac)
	}

	// The streams' bytes as the host's listeners read them.
	for port, want := range map[string]string{
		"5001": fmt.Sprintf("bytes=%d sum=%s", len(hostileMsg), lab.Sum([]byte(hostileMsg))),
		"5002": "bytes=0 sum=" + lab.Sum(nil),
	} {
		l := fields(out, "LISTEN "+port+" VSOCK-LISTEN")
		if got := fmt.Sprintf("bytes=%s sum=%s", l["bytes"], l["sum"]); got != want {
			t.Errorf("host port %s's listener read %v, want %s", port, l, want)
		}
	}

	// The interface left to Linux.
	host, fetch := fields(out, "HOST"), fields(out, "SQUIB-GUEST-HOSTILE-FETCH")
	if got := lineAfter(out, "SQUIB-GUEST-HOSTILE-LEASE"); got != "addr=192.168.127.2/24" {
		t.Errorf("eth0's DHCP lease after the hostile cases: %q, want addr=192.168.127.2/24", got)
	}
	if host == nil || fetch["bytes"] != "1048576" || fetch["sum"] != host["blob"] {
		t.Errorf("eth0 fetched %v after the hostile cases, want 1 MiB with md5 %s", fetch, host["blob"])
	}

	var warns []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "level=WARN") {
			warns = append(warns, l)
		}
	}
	for _, w := range netHostileWarns {
		n := 0
		for _, l := range warns {
			if strings.Contains(l, w) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("squibd logged %d WARN lines with %s, want 1", n, w)
		}
	}
	if host["warns"] != fmt.Sprint(len(netHostileWarns)) {
		t.Errorf("squibd logged %s WARN lines, want %d: one per kind of misbehaviour", host["warns"], len(netHostileWarns))
	}
	logMarked(t, out, "SQUIB-GUEST-HOSTILE", "LISTEN ", "HOST ", "EXIT ", "time=")
}
