package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The API tests run the real squibd binary (squibdBin) on real sockets.
// On this machine it has no hypervisor, so they cover everything up to
// InstanceStart; the running phase (pause, resume, metrics, the guest
// powering off) is tested in the lab, with a real guest on KVM: see
// e2e/api_test.go.

// syncBuffer is a bytes.Buffer that a process writes while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// daemon is a squibd process serving the API on sock.
type daemon struct {
	t              testing.TB
	cmd            *exec.Cmd
	sock           string
	stdout, stderr syncBuffer
	http           *http.Client
	exited         chan struct{}
}

// startDaemon starts bin --api-sock SOCK args... and waits until the
// socket accepts connections. The process is stopped when the test ends.
func startDaemon(t testing.TB, bin string, args ...string) *daemon {
	t.Helper()
	d := newDaemon(t, filepath.Join(t.TempDir(), "api.sock"), bin, args...)
	d.waitReady()
	return d
}

// newDaemon starts the process without waiting for its socket.
func newDaemon(t testing.TB, sock, bin string, args ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, sock: sock, exited: make(chan struct{})}
	d.cmd = exec.Command(bin, append([]string{"--api-sock", sock}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = &d.stdout, &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.cmd.Wait()
		close(d.exited)
	}()
	d.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 100,
	}}
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			t.Errorf("squibd did not exit on SIGTERM; stderr:\n%s", d.stderr.String())
		}
		d.http.CloseIdleConnections()
		if e := d.stderr.String(); strings.Contains(e, "DATA RACE") || strings.Contains(e, "panic:") {
			t.Errorf("squibd failed:\n%s", e)
		}
	})
	return d
}

func (d *daemon) waitReady() {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", d.sock); err == nil {
			c.Close()
			return
		}
		select {
		case <-d.exited:
			d.t.Fatalf("squibd exited: %v\n%s", d.cmd.ProcessState, d.stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("the API socket did not come up; stderr:\n%s", d.stderr.String())
		}
	}
}

// wait waits for the process to exit and returns its exit status.
func (d *daemon) wait() int {
	d.t.Helper()
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		d.t.Fatalf("squibd did not exit; stderr:\n%s", d.stderr.String())
	}
	return d.cmd.ProcessState.ExitCode()
}

// do sends a request; a non-empty body is sent as is.
func (d *daemon) do(method, path, body string) (int, string, error) {
	return d.doWithin(0, method, path, body)
}

// doWithin is do with the answer due within limit (0: the client's
// timeout); it is safe to call from any goroutine.
func (d *daemon) doWithin(limit time.Duration, method, path, body string) (int, string, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	ctx := context.Background()
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, r)
	if err != nil {
		return 0, "", err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// ok sends a request that must succeed with 204 and no body.
func (d *daemon) ok(method, path, body string) {
	d.t.Helper()
	status, resp, err := d.do(method, path, body)
	if err != nil || status != http.StatusNoContent || resp != "" {
		d.t.Fatalf("%s %s %s: %d %q %v; want 204 and no body", method, path, body, status, resp, err)
	}
}

// get sends a GET that must succeed, decoding the answer into out.
func (d *daemon) get(path string, out any) {
	d.t.Helper()
	status, resp, err := d.do(http.MethodGet, path, "")
	if err != nil || status != http.StatusOK {
		d.t.Fatalf("GET %s: %d %q %v", path, status, resp, err)
	}
	if err := json.Unmarshal([]byte(resp), out); err != nil {
		d.t.Fatalf("GET %s: %v in %q", path, err, resp)
	}
}

// fault sends a request that must fail with 400 and a fault message
// containing want.
func (d *daemon) fault(method, path, body, want string) {
	d.t.Helper()
	status, resp, err := d.do(method, path, body)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	var f struct {
		Message *string `json:"fault_message"`
	}
	if status != http.StatusBadRequest || json.Unmarshal([]byte(resp), &f) != nil || f.Message == nil {
		d.t.Fatalf("%s %s %.80s: %d %q; want 400 with a fault_message", method, path, body, status, resp)
	}
	if !strings.Contains(*f.Message, want) {
		d.t.Fatalf("%s %s %.80s: fault %q; want it to contain %q", method, path, body, *f.Message, want)
	}
}

// state returns the state GET / reports.
func (d *daemon) state() string {
	d.t.Helper()
	var info struct{ State string }
	d.get("/", &info)
	return info.State
}
