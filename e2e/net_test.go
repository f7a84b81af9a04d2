package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/lab"
)

// TestNet runs testdata/net.sh in one L1 per page size: virtio-net on the
// built-in user-mode network, from a guest configured with a
// "network-interfaces" entry holding "user". The guest leases its address
// by DHCP, resolves the gateway's name, and fetches 1 MiB intact over HTTP
// from L1's loopback through the NAT; L1 reaches the guest's httpd on the
// published port; 64 MiB go each way intact (their throughput is logged,
// beside the same stream over L1's loopback). A restore with another
// published port keeps the guest's address, fetches again and answers on
// the new port.
func TestNet(t *testing.T) {
	lab.Require(t)
	files := labFiles(t)
	files["/gvproxy"] = buildForL1(t, "github.com/containers/gvisor-tap-vsock/cmd/gvproxy")
	for _, ps := range []lab.PageSize{lab.Page4K, lab.Page16K} {
		t.Run(fmt.Sprintf("%dK", ps), func(t *testing.T) {
			cmds := []lab.Command{{Name: "net", Args: []string{"/bin/sh", "/e2e/net.sh"}}}
			if ps == lab.Page4K {
				cmds = append(cmds, lab.Command{Name: "netgv", Args: []string{"/bin/sh", "/e2e/netgv.sh"}})
			}
			rs := lab.Run(t, lab.Options{PageSize: ps, Files: files, Timeout: 30 * time.Minute, Commands: cmds})
			for _, r := range rs {
				if r.ExitCode != 0 {
					t.Fatalf("%s: exit status %d (%s)\n%s", r.Name, r.ExitCode, why(r.Output), r.Output)
				}
			}
			checkNet(t, rs[0].Output)
			if len(rs) > 1 {
				checkNetGvproxy(t, rs[1].Output)
			}
		})
	}
}

// checkNetGvproxy checks testdata/netgv.sh's guest on gvproxy: the lease
// gvproxy keeps for the configured MAC, the gateway's name, and the blob
// fetched through gvproxy's NAT.
func checkNetGvproxy(t *testing.T, out string) {
	checkNetGuest(t, out, "g", "gvproxy")
	checkStopped(t, out, "g")
	if t.Failed() {
		t.Logf("output:\n%s", out)
		return
	}
	logMarked(t, out, "BLOB ", "MAC ", "ADDR ", "DNS ", "FETCH ")
}

// checkNetGuest checks what guest-init's test_net printed in guest name's
// lines, on a network served by via: the default user-mode MAC (which
// gvproxy's static lease names too), the lease of 192.168.127.2 from the
// gateway, the gateway's name resolved, and L1's 1 MiB blob fetched intact
// through the NAT.
func checkNetGuest(t *testing.T, out, name, via string) {
	if got := lineAfter(out, "MAC "+name); got != "5a:94:ef:e4:0c:ee" {
		t.Errorf("%s: guest MAC %q, want the user-mode network's default", via, got)
	}
	if got := lineAfter(out, "ADDR "+name); got != "192.168.127.2/24 router=192.168.127.1 dns=192.168.127.1" {
		t.Errorf("%s: DHCP lease %q", via, got)
	}
	if got := lineAfter(out, "DNS "+name); got != "192.168.127.1" {
		t.Errorf("%s: gateway.containers.internal resolved to %q", via, got)
	}
	blob := fields(out, "BLOB")["sum"]
	if f := fields(out, "FETCH "+name); blob == "" || f["bytes"] != "1048576" || f["sum"] != blob {
		t.Errorf("%s: 1 MiB fetched through the NAT: %v, want sum %q", via, f, blob)
	}
}

func checkNet(t *testing.T, out string) {
	checkNetGuest(t, out, "a", "user-mode network")
	blob := fields(out, "BLOB")["sum"]
	if a := fields(out, "AGAIN b"); blob == "" || a["sum"] != blob || a["addr"] != "192.168.127.2/24" {
		t.Errorf("fetched again after restore: %v, want sum %q from 192.168.127.2/24", a, blob)
	}
	for _, name := range []string{"a", "b"} {
		if got := lineAfter(out, "PUBLISHED "+name); got != "hello from the guest" {
			t.Errorf("%s's published port answered %q", name, got)
		}
	}
	mbps := map[string]float64{}
	for _, dir := range []struct{ name, l1, guest string }{
		{"UP", "SQUIB-NETBENCH-RECV", "SQUIB-NETBENCH-SEND"},
		{"DOWN", "SQUIB-NETBENCH-SEND", "SQUIB-NETBENCH-RECV"},
		{"FLOOR", "SQUIB-NETBENCH-SEND", ""},
	} {
		l1 := fields(out, dir.name+" "+dir.l1)
		if l1["bytes"] != "67108864" {
			t.Errorf("%s: L1's side %v, want 64 MiB", dir.name, l1)
			continue
		}
		mbps[dir.name], _ = strconv.ParseFloat(l1["mbps"], 64)
		if dir.guest == "" {
			continue
		}
		if g := fields(out, dir.name+"-GUEST "+dir.guest); g["bytes"] != "67108864" {
			t.Errorf("%s: the guest's side %v, want 64 MiB and the stream's end", dir.name, g)
		}
	}
	if d := lineAfter(out, "DESCRIBE"); !strings.Contains(d, `"virtio-net-eth0"`) {
		t.Errorf("describe does not list the device: %q", d)
	}
	if c := lineAfter(out, "CONFIG b"); !strings.Contains(c, `"publish":["tcp:127.0.0.1:8081:80"]`) {
		t.Errorf("the restored VM's configuration: %q, want the overriding published port", c)
	}
	checkStopped(t, out, "b")
	if t.Failed() {
		t.Logf("output:\n%s", out)
		return
	}
	if f := mbps["FLOOR"]; f > 0 {
		t.Logf("64 MiB over TCP, Mbit/s: guest->L1 %.1f (%.3fx L1 loopback), L1->guest %.1f (%.3fx), L1 loopback %.1f",
			mbps["UP"], mbps["UP"]/f, mbps["DOWN"], mbps["DOWN"]/f, f)
	}
	logMarked(t, out, "BLOB ", "MAC ", "ADDR ", "DNS ", "FETCH ", "PUBLISHED ", "UP", "DOWN", "FLOOR ", "DESCRIBE ", "AGAIN ", "CONFIG ")
}

// TestNetTap runs testdata/nettap.sh in one L1: virtio-net on Linux taps
// bridged in L1, offloads on. Both guests' drivers take the checksum and
// TSO offloads; 16 MiB go intact from one guest to the other across the
// bridge; a guest fetches 1 MiB from L1 and L1 reaches both guests. A
// clone restored onto another tap (network_overrides) answers on the
// source's address and fetches again.
func TestNetTap(t *testing.T) {
	lab.Require(t)
	rs := lab.Run(t, lab.Options{PageSize: lab.Page4K, Files: labFiles(t), Timeout: 30 * time.Minute,
		Commands: []lab.Command{{Name: "nettap", Args: []string{"/bin/sh", "/e2e/nettap.sh"}}}})
	r := rs[0]
	if r.ExitCode != 0 {
		t.Fatalf("exit status %d (%s)\n%s", r.ExitCode, why(r.Output), r.Output)
	}
	checkNetTap(t, r.Output)
}

// tapFeatures are the virtio-net feature bits a guest on a tap must have
// accepted: CSUM, GUEST_CSUM, MAC, GUEST_TSO4, HOST_TSO4 and VERSION_1.
var tapFeatures = map[int]string{0: "CSUM", 1: "GUEST_CSUM", 5: "MAC", 7: "GUEST_TSO4", 11: "HOST_TSO4", 32: "VERSION_1"}

func checkNetTap(t *testing.T, out string) {
	for name, ip := range map[string]string{"a": "10.0.77.2", "b": "10.0.77.3"} {
		a := fields(out, "ADDR "+name)
		if !strings.HasPrefix(lineAfter(out, "ADDR "+name), ip+"/24 ") {
			t.Errorf("%s's address: %q, want %s/24", name, lineAfter(out, "ADDR "+name), ip)
		}
		for bit, what := range tapFeatures {
			if f := a["features"]; len(f) <= bit || f[bit] != '1' {
				t.Errorf("%s's driver did not accept %s (bit %d): features %q", name, what, bit, f)
			}
		}
		if got := lineAfter(out, "HELLO "+name); got != "hello from "+ip {
			t.Errorf("L1 to %s's httpd: %q", name, got)
		}
	}
	if got := lineAfter(out, "HELLO c"); got != "hello from 10.0.77.2" {
		t.Errorf("L1 to the clone's httpd: %q", got)
	}
	s, r := fields(out, "SEND b SQUIB-NETBENCH-SEND"), fields(out, "RECV a")
	if s["bytes"] != "16777216" || r["bytes"] != s["bytes"] {
		t.Errorf("16 MiB from b to a: b sent %v, a received %v", s, r)
	}
	blob := fields(out, "BLOB")["sum"]
	for _, name := range []string{"a", "c"} {
		if f := fields(out, "FETCH "+name); blob == "" || f["bytes"] != "1048576" || f["sum"] != blob {
			t.Errorf("%s fetched %v from L1, want 1 MiB with sum %q", name, f, blob)
		}
	}
	if c := lineAfter(out, "CONFIG c"); !strings.Contains(c, `"host_dev_name":"tap2"`) {
		t.Errorf("the clone's configuration: %q, want it on tap2", c)
	}
	checkStopped(t, out, "c")
	if t.Failed() {
		t.Logf("output:\n%s", out)
		return
	}
	logMarked(t, out, "BLOB ", "ADDR ", "HELLO ", "SEND ", "RECV ", "FETCH ", "CONFIG ")
}

// checkStopped checks that squibd name, sent SIGTERM, exited 143 (a clean
// stop, its backend closed), not by a crash.
func checkStopped(t *testing.T, out, name string) {
	if s := fields(out, "STOPPED "+name); s["status"] != "143" {
		t.Errorf("squibd %s on SIGTERM: %v, want exit status 143", name, s)
	}
}
