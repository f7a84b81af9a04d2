//go:build darwin && arm64

package hvf_test

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/squibvm/squib/devices/netdev"
	"github.com/squibvm/squib/devices/vsock"
	"github.com/squibvm/squib/hvf"
	"github.com/squibvm/squib/lab"
	"github.com/squibvm/squib/loader"
	"github.com/squibvm/squib/vmm"
)

var (
	echoReadyRE = regexp.MustCompile(`SQUIB-VSOCK-ECHO-READY port=5000`)
	connectRE   = regexp.MustCompile(`SQUIB-GUEST-RUN SQUIB-VSOCK-(?:CONNECT sent=(\d+) sum=([0-9a-f]{16}) received=(\d+)|FAIL[^\r\n]*)`)
	netAddrRE   = regexp.MustCompile(`SQUIB-GUEST-NET-(?:ADDR|FAIL)=[^\r\n]*`)
	netMACRE    = regexp.MustCompile(`SQUIB-GUEST-NET-MAC=(\S+)`)
	netDNSRE    = regexp.MustCompile(`SQUIB-GUEST-NET-DNS=(\S*)`)
	netFetchRE  = regexp.MustCompile(`SQUIB-GUEST-NET-FETCH bytes=(\d*) sum=([0-9a-f]*)`)
)

// startGuest boots cfg's guest under h with guest-init's workload taking
// commands typed into the returned writer. stop stops the VM, once; the
// test's end stops it too.
func startGuest(t *testing.T, h *hvf.Hypervisor, cfg vmm.Config) (console *syncBuffer, typed io.Writer, stop func()) {
	t.Helper()
	plan, err := vmm.Prepare(cfg)
	if err != nil {
		t.Fatal(err)
	}
	console = new(syncBuffer)
	m, err := vmm.New(h, plan, console, slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if errors.Is(err, hvf.ErrNotEntitled) {
		t.Skip(notEntitled)
	}
	if err != nil {
		t.Fatal(err)
	}
	in, w := io.Pipe()
	m.Start(in)
	stop = sync.OnceFunc(func() {
		m.Stop()
		if outcome, err := m.Wait(); err != nil || outcome != vmm.Stopped {
			t.Errorf("the VM ended with %v (%v) before it was stopped; console:\n%s", outcome, err, console.String())
		}
		w.Close()
	})
	t.Cleanup(stop)
	return console, w, stop
}

// vsockEcho opens a stream to the guest's port 5000 through the vsock
// socket uds as Firecracker's hybrid vsock has it (CONNECT 5000, answered
// OK <host port>), sends want while reading its echo until the guest ends
// the stream, and compares.
func vsockEcho(uds string, want []byte) error {
	c, err := net.Dial("unix", uds)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := io.WriteString(c, "CONNECT 5000\n"); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "OK ") {
		return fmt.Errorf("CONNECT 5000: answer %q, %v", line, err)
	}
	sent := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		if err == nil {
			err = c.(*net.UnixConn).CloseWrite()
		}
		sent <- err
	}()
	got, err := io.ReadAll(r)
	if werr := <-sent; werr != nil {
		return fmt.Errorf("sending: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("the echo (%d bytes) differs from the %d bytes sent", len(got), len(want))
	}
	return nil
}

// TestVsockEcho runs guest-init's vsock test (an echo server on vsock
// port 5000, then the workload) on a virtio-vsock device over Unix
// sockets, Firecracker's hybrid vsock: 8 host-initiated streams at once
// each get their 1 MiB back intact through the device's socket, with no
// connection ending in an error; a guest-initiated stream to host port
// 5001 ("run vsock connect 2 5001 65536" on the console) delivers the
// lab's 64 KiB pattern whole to the socket's _5001 listener; and the
// socket is gone once the VM is stopped.
func TestVsockEcho(t *testing.T) {
	kernel, rd := guestFiles(t)
	h := openHVF(t)
	// Not t.TempDir: a Unix socket's path has at most 103 bytes on macOS.
	dir, err := os.MkdirTemp("", "vsock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	uds := filepath.Join(dir, "v.sock")
	console, typed, stop := startGuest(t, h, vmm.Config{
		Kernel: loader.Bytes(kernel), Initrd: loader.Bytes(rd), VCPUs: 2, MemoryMiB: 256,
		Cmdline: "console=ttyAMA0 panic=-1 squib.test=vsock",
		Vsock:   &vsock.Config{CID: 3, UDSPath: uds},
	})
	waitConsole(t, console, echoReadyRE, 1)
	waitConsole(t, console, counterRE, 1) // the workload reads the console

	const streams = 8
	errs := make([]error, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() { errs[i] = vsockEcho(uds, lab.Pattern(uint32(i+1), 1<<20)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("host stream %d: %v", i, err)
		}
	}

	l, err := net.Listen("unix", uds+"_5001")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		b   []byte
		err error
	}
	received := make(chan result, 1)
	go func() {
		l.(*net.UnixListener).SetDeadline(time.Now().Add(2 * time.Minute))
		s, err := l.Accept()
		if err != nil {
			received <- result{nil, err}
			return
		}
		defer s.Close() // the guest reads until the host ends the stream
		s.SetDeadline(time.Now().Add(2 * time.Minute))
		b, err := io.ReadAll(s)
		received <- result{b, err}
	}()
	fmt.Fprintln(typed, "run vsock connect 2 5001 65536")
	g := waitConsole(t, console, connectRE, 1)
	if g[1] == "" {
		t.Fatalf("the guest's stream to host port 5001 failed: %q", g[0])
	}
	r := <-received
	switch {
	case r.err != nil:
		t.Errorf("the host's _5001 listener: %v", r.err)
	case g[1] != "65536" || g[3] != "0":
		t.Errorf("the guest: %q, want 65536 bytes sent and none received", g[0])
	case !bytes.Equal(r.b, lab.Pattern(lab.GuestSeed, 65536)):
		t.Errorf("the host's _5001 listener got %d bytes, not the guest's 64 KiB pattern", len(r.b))
	case g[2] != lab.Sum(r.b):
		t.Errorf("the guest's sum %s differs from the received bytes' %s", g[2], lab.Sum(r.b))
	}
	if strings.Contains(console.String(), "SQUIB-VSOCK-ECHO-END") {
		t.Errorf("a guest echo connection ended in an error:\n%s", console.String())
	}

	stop()
	if _, err := os.Lstat(uds); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the vsock socket after the VM stopped: %v, want it removed", err)
	}
}

// TestUserNetFetch runs guest-init's net test on virtio-net over the
// built-in user-mode network (no root, no helper process): the guest,
// with the network's default MAC, leases 192.168.127.2/24 by DHCP,
// resolves gateway.containers.internal to the gateway, and fetches 1 MiB
// intact over HTTP from a server on the host's 127.0.0.1 through the NAT
// (192.168.127.254); a port published on the host's 127.0.0.1 reaches
// the guest's httpd.
func TestUserNetFetch(t *testing.T) {
	kernel, rd := guestFiles(t)
	h := openHVF(t)
	blob := make([]byte, 1<<20)
	rand.Read(blob)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/blob" {
			http.NotFound(w, r)
			return
		}
		w.Write(blob)
	}))
	defer srv.Close()
	// A published port's host port is in 1-65535 (netdev.ParseForward):
	// take a free one.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	published := free.Addr().String()
	free.Close()

	console, _, _ := startGuest(t, h, vmm.Config{
		Kernel: loader.Bytes(kernel), Initrd: loader.Bytes(rd), VCPUs: 2, MemoryMiB: 256,
		Cmdline: "console=ttyAMA0 panic=-1 squib.test=net squib.fetch=" + strconv.Itoa(srv.Listener.Addr().(*net.TCPAddr).Port) + "/blob",
		Nets: []netdev.Config{{ID: "eth0", User: true,
			Publish: []netdev.Forward{{Proto: "tcp", Host: published, Guest: 80}}}},
	})
	waitConsole(t, console, counterRE, 1) // after the fetch, with httpd up
	out := console.String()
	if m := netMACRE.FindStringSubmatch(out); m == nil || m[1] != netdev.DefaultUserMAC.String() {
		t.Errorf("guest MAC %q, want the user-mode network's default %s", m, netdev.DefaultUserMAC)
	}
	if got, want := strings.TrimSpace(netAddrRE.FindString(out)), "SQUIB-GUEST-NET-ADDR=192.168.127.2/24 router=192.168.127.1 dns=192.168.127.1"; got != want {
		t.Errorf("DHCP lease %q, want %q", got, want)
	}
	if m := netDNSRE.FindStringSubmatch(out); m == nil || m[1] != netdev.UserGatewayIP {
		t.Errorf("gateway.containers.internal resolved to %q, want %s", m, netdev.UserGatewayIP)
	}
	sum := fmt.Sprintf("%x", md5.Sum(blob))
	if m := netFetchRE.FindStringSubmatch(out); m == nil || m[1] != "1048576" || m[2] != sum {
		t.Errorf("the fetch through the NAT: %q, want 1048576 bytes with md5 %s", m, sum)
	}

	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + published + "/hello")
	if err != nil {
		t.Fatalf("GET /hello on the published port %s: %v", published, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "hello from the guest\n" {
		t.Errorf("GET /hello on the published port %s: %s %q (%v), want 200 \"hello from the guest\\n\"", published, resp.Status, body, err)
	}
	if t.Failed() {
		t.Logf("console:\n%s", out)
	}
}
