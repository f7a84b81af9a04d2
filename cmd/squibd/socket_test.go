package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestSocketFile(t *testing.T) {
	d := startDaemon(t, squibdBin)
	st, err := os.Lstat(d.sock)
	if err != nil || st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o600 {
		t.Errorf("socket file: %v %v; want a socket with mode 0600", st.Mode(), err)
	}

	// A second squibd on a live socket refuses to start.
	status, stderr := runSquibd(t, "--api-sock", d.sock)
	if status != exitError || !strings.Contains(stderr, "another process is listening on the API socket") {
		t.Errorf("second squibd: status %d, %q", status, stderr)
	}
	if s := d.state(); s != "Not started" {
		t.Errorf("the first squibd stopped answering: %q", s)
	}

	// Something that is not a socket is left alone.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("data"), 0o644)
	status, stderr = runSquibd(t, "--api-sock", file)
	if b, _ := os.ReadFile(file); status != exitError || !strings.Contains(stderr, "exists and is not a socket") || string(b) != "data" {
		t.Errorf("squibd on a regular file: status %d, %q, file now %q", status, stderr, b)
	}
}

// TestSocketStale starts squibd where a dead process left its socket.
func TestSocketStale(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	d := newDaemon(t, sock, squibdBin)
	d.waitReady()
	if s := d.state(); s != "Not started" {
		t.Errorf("state %q", s)
	}
}

// TestSocketRemovedOnSignal checks that SIGTERM and SIGINT end squibd
// with 128+N and remove the socket file.
func TestSocketRemovedOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		d := startDaemon(t, squibdBin)
		d.cmd.Process.Signal(sig)
		if status := d.wait(); status != exitSignaled+int(sig) {
			t.Errorf("%v: exit status %d", sig, status)
		}
		if _, err := os.Lstat(d.sock); !os.IsNotExist(err) {
			t.Errorf("%v: the socket file is still there (%v)", sig, err)
		}
	}
}

// TestSocketRemovedOnConfigError checks that squibd removes its socket
// file when --config-file fails, many times over: the failure races the
// start of the API server.
func TestSocketRemovedOnConfigError(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "config.json")
	body := fmt.Sprintf(`{"boot-source": {"kernel_image_path": %q}}`, filepath.Join(dir, "missing"))
	if err := os.WriteFile(config, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "api.sock")
	const runs = 100
	left := 0
	for range runs {
		status, stderr := runSquibd(t, "--api-sock", sock, "--config-file", config)
		if status != exitError || !strings.Contains(stderr, "The kernel file cannot be opened") {
			t.Fatalf("status %d, %q; want the kernel file's error", status, stderr)
		}
		if _, err := os.Lstat(sock); !os.IsNotExist(err) {
			left++ // the next run replaces it as stale
		}
	}
	if left > 0 {
		t.Errorf("the socket file was left behind in %d of %d runs", left, runs)
	}
}

// TestConcurrentClients sends requests from 64 clients at once, each
// checking its answers, while PUTs change the machine configuration.
func TestConcurrentClients(t *testing.T) {
	d := startDaemon(t, squibdBin, "--id", "busy")
	const clients, rounds = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, clients*rounds)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				if err := oneRequest(d, i, r); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var mc struct {
		VCPUCount int `json:"vcpu_count"`
	}
	d.get("/machine-config", &mc)
	if mc.VCPUCount < 1 || mc.VCPUCount > 8 {
		t.Errorf("vcpu_count %d after the PUTs", mc.VCPUCount)
	}
}

// oneRequest sends request r of client i and checks the answer.
func oneRequest(d *daemon, i, r int) error {
	var method, path, body, want string
	status := 200
	switch (i + r) % 4 {
	case 0:
		method, path, want = "GET", "/", `{"id":"busy","state":"Not started","vmm_version":"`+version+`","app_name":"squibd"}`
	case 1:
		method, path = "GET", "/machine-config"
	case 2:
		method, path, status = "PUT", "/machine-config", 204
		body = fmt.Sprintf(`{"vcpu_count": %d, "mem_size_mib": 256}`, 1+i%8)
	case 3:
		method, path, status = "PATCH", "/vm", 400
		body, want = `{"state": "Paused"}`, `{"fault_message":"The requested operation is not supported before starting the microVM."}`
	}
	got, resp, err := d.do(method, path, body)
	switch {
	case err != nil:
		return fmt.Errorf("client %d: %s %s: %v", i, method, path, err)
	case got != status || (want != "" && resp != want):
		return fmt.Errorf("client %d: %s %s: %d %s; want %d %s", i, method, path, got, resp, status, want)
	case path == "/machine-config" && method == "GET" && !json.Valid([]byte(resp)):
		return fmt.Errorf("client %d: GET /machine-config: %q", i, resp)
	}
	return nil
}

// TestSilentClient checks that a client that connects and sends nothing,
// and one that stops halfway through a body, stall nobody else.
func TestSilentClient(t *testing.T) {
	d := startDaemon(t, squibdBin, "--id", "busy")
	silent, err := net.Dial("unix", d.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	partial, err := net.Dial("unix", d.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer partial.Close()
	io.WriteString(partial, "PUT /machine-config HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"vcpu")
	time.Sleep(50 * time.Millisecond)

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- oneRequest(d, i, 0)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("50 requests took %v beside a silent client", took)
	}
}

func TestClientCommands(t *testing.T) {
	d := startDaemon(t, squibdBin, "--id", "vm7")
	stdout, stderr, status := runClient(t, "status", "--socket", d.sock)
	if status != 0 || stdout != "id:      vm7\nstate:   Not started\nversion: squibd "+version+"\n" {
		t.Errorf("status: %d %q %q", status, stdout, stderr)
	}
	stdout, _, status = runClient(t, "status", "--socket", d.sock, "--json")
	if status != 0 || stdout != `{"id":"vm7","state":"Not started","vmm_version":"`+version+`","app_name":"squibd"}`+"\n" {
		t.Errorf("status --json: %d %q", status, stdout)
	}
	const notStarted = "The requested operation is not supported before starting the microVM."
	for _, c := range []struct {
		args   []string
		status int
		stderr string
	}{
		{[]string{"pause", "--socket", d.sock}, exitError, "squibd: " + notStarted + "\n"},
		{[]string{"resume", "--socket", d.sock}, exitError, "squibd: " + notStarted + "\n"},
		{[]string{"snapshot", "create", "--socket", d.sock, "--snapshot", "s", "--mem", "m"}, exitError, "squibd: " + notStarted + "\n"},
		{[]string{"snapshot", "load", "--socket", d.sock, "--snapshot", "s", "--mem", "m", "--resume"}, exitError, "squibd: " + loadFault()},
		{[]string{"drive", "--socket", d.sock, "--id", "rootfs", "--path", "b.ext4"}, exitError, "squibd: " + notStarted + "\n"},
		{[]string{"drive", "--socket", d.sock, "--id", "rootfs"}, exitUsage, "usage: squibd drive --socket PATH --id DRIVE --path FILE"},
		{[]string{"snapshot", "--socket", d.sock}, exitUsage, "usage: squibd snapshot create|load"},
		{[]string{"status"}, exitUsage, "--socket is required"},
		{[]string{"status", "--socket", d.sock, "extra"}, exitUsage, `unexpected argument "extra"`},
		{[]string{"status", "--socket", filepath.Join(t.TempDir(), "none")}, exitError, "talking to squibd at"},
	} {
		_, stderr, status := runClient(t, c.args...)
		if status != c.status || !strings.Contains(stderr, c.stderr) {
			t.Errorf("%v: status %d, stderr %q; want %d, %q", c.args, status, stderr, c.status, c.stderr)
		}
	}
	stdout, _, _ = runClient(t, "pause", "--socket", d.sock, "--json")
	if stdout != `{"fault_message":"`+notStarted+`"}`+"\n" {
		t.Errorf("pause --json: %q", stdout)
	}
}

// TestClientBodies checks the requests "squibd snapshot load" and "squibd
// drive" send: squib's own fields, and options left at their defaults, are
// left out, so that the default request is one Firecracker accepts.
func TestClientBodies(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	bodies := make(chan string, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method + " " + r.URL.EscapedPath() {
		case "PUT /snapshot/load", "PATCH /drives/root%20fs":
			b, _ := io.ReadAll(r.Body)
			bodies <- r.Method + " " + string(b)
			w.WriteHeader(http.StatusNoContent)
		case "GET /":
			io.WriteString(w, `{"id":"fc","state":"Paused","vmm_version":"1.16.1","app_name":"Firecracker"}`)
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	srv.Listener = l
	srv.Start()
	defer srv.Close()

	const base = `{"snapshot_path":"s","mem_backend":{"backend_type":"File","backend_path":"m"}`
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{nil, base + `}`},
		{[]string{"--vcpu-power", "saved"}, base + `}`},
		{[]string{"--resume", "--track-dirty-pages"}, base + `,"track_dirty_pages":true,"resume_vm":true}`},
		{[]string{"--vcpu-power", "boot_vcpu", "--copy-memory"}, base + `,"vcpu_power":"boot_vcpu","copy_memory":true}`},
		{[]string{"--vsock-uds", "/run/clone1.sock"}, base + `,"vsock_override":{"uds_path":"/run/clone1.sock"}}`},
		{[]string{"--net", "eth0=tap:tap7", "--net", "eth1=unixgram:/run/gv.sock", "--net", "eth2=publish:8080:80;udp:53:53", "--net", "eth3=publish:"},
			base + `,"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap7"},{"iface_id":"eth1","unixgram_path":"/run/gv.sock"},` +
				`{"iface_id":"eth2","publish":["8080:80","udp:53:53"]},{"iface_id":"eth3","publish":[]}]}`},
	} {
		args := append([]string{"snapshot", "load", "--socket", sock, "--snapshot", "s", "--mem", "m"}, c.flags...)
		if _, stderr, status := runClient(t, args...); status != exitOK {
			t.Fatalf("%v: status %d, %q", c.flags, status, stderr)
		}
		if got := <-bodies; got != "PUT "+c.want {
			t.Errorf("%v: sent %s, want %s", c.flags, got, c.want)
		}
	}

	if _, stderr, status := runClient(t, "drive", "--socket", sock, "--id", "root fs", "--path", "/images/b.ext4"); status != exitOK {
		t.Fatalf("drive: status %d, %q", status, stderr)
	}
	if got, want := <-bodies, `PATCH {"drive_id":"root fs","path_on_host":"/images/b.ext4"}`; got != want {
		t.Errorf("drive: sent %s, want %s", got, want)
	}
}

// runClient runs a squibd client command.
func runClient(t *testing.T, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	var out, errOut syncBuffer
	status = squibd(args, nil, &out, &errOut)
	return out.String(), errOut.String(), status
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	kernel := writeKernel(t, 16<<20)
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(body), 0o644)
		return path
	}
	boot := fmt.Sprintf(`"boot-source": {"kernel_image_path": %q}`, kernel)
	cases := []struct {
		name, config, stderr string
	}{
		{"drives", `{` + boot + `, "drives": [{"drive_id": "rootfs", "path_on_host": "/nonexistent", "is_root_device": true}]}`,
			"Drive config error: Unable to open the block device backing file: stat /nonexistent"},
		{"vsock", `{` + boot + `, "vsock": {"guest_cid": 3}}`, "missing field `uds_path`"},
		{"vsock reserved CID", `{` + boot + `, "vsock": {"guest_cid": 1, "uds_path": "v.sock"}}`, "Vsock config error: guest CID 1 is reserved"},
		{"vsock unknown key", `{` + boot + `, "vsock": {"guest_cid": 3, "uds_path": "v.sock", "port": 1}}`, `json: unknown field "port"`},
		{"unknown key", `{` + boot + `, "serial": {}}`, `json: unknown field "serial"`},
		{"entropy unknown key", `{` + boot + `, "entropy": {"rate": 1}}`, `json: unknown field "rate"`},
		{"entropy rate limited", `{` + boot + `, "entropy": {"rate_limiter": {"ops": {"size": 1, "refill_time": 10}}}}`,
			"squibd does not rate-limit the entropy device"},
		{"no boot source", `{"machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}`, "missing field `boot-source`"},
		{"bad machine", `{` + boot + `, "machine-config": {"vcpu_count": 0, "mem_size_mib": 128}}`, "vcpu_count 0"},
		{"not JSON", `boot-source: x`, "invalid character"},
		{"duplicate section", `{` + boot + `, "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}, "machine-config": {"vcpu_count": 2, "mem_size_mib": 128}}`,
			"duplicate field `machine-config`."},
		{"duplicate nested key", `{` + boot + `, "machine-config": {"vcpu_count": 1, "mem_size_mib": 128, "vcpu_count": 200}}`,
			"duplicate field `vcpu_count` in `machine-config`."},
		{"duplicate key in a list", `{` + boot + `, "drives": [{"drive_id": "a"}, {"drive_id": "a", "drive_id": "b"}]}`,
			"duplicate field `drive_id` in `drives[1]`."},
	}
	if noHypervisor() {
		cases = append(cases, struct{ name, config, stderr string }{"no hypervisor",
			`{` + boot + `, "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}, "drives": [], "entropy": {},
				"vsock": {"guest_cid": 3, "uds_path": "` + filepath.Join(dir, "v.sock") + `"}}`,
			"Start microvm error: no usable hypervisor"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := write(c.name+".json", c.config)
			status, stderr := runSquibd(t, "--no-api", "--config-file", path)
			if status != exitError || !strings.Contains(stderr, "--config-file "+path+": ") || !strings.Contains(stderr, c.stderr) {
				t.Errorf("status %d, stderr %q; want %q", status, stderr, c.stderr)
			}
		})
	}
	for _, args := range [][]string{{"--no-api"}, {"--id", "x"}, {"--api-sock", "s", "extra"}, {"--level", "loud", "--api-sock", "s"}} {
		if status, stderr := runSquibd(t, args...); status != exitUsage {
			t.Errorf("%v: status %d, %q; want a usage error", args, status, stderr)
		}
	}
}

// TestAPIWaitsForConfigFile checks that squibd, like Firecracker, answers no
// request before it has applied --config-file: a request sent while squibd
// still reads the file (a FIFO here) waits, and when the file then fails,
// squibd exits without answering it.
func TestAPIWaitsForConfigFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "config.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, squibdBin, "--config-file", fifo)
	answered := make(chan error, 1)
	go func() {
		status, body, err := d.do("GET", "/", "")
		if err == nil {
			err = fmt.Errorf("answered %d %s", status, body)
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("a request ended before the config file was read: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	body := fmt.Sprintf(`{"boot-source": {"kernel_image_path": %q}}`, filepath.Join(dir, "missing"))
	if err := os.WriteFile(fifo, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if status := d.wait(); status != exitError || !strings.Contains(d.stderr.String(), "The kernel file cannot be opened") {
		t.Errorf("status %d, want %d and the kernel file's error:\n%s", status, exitError, d.stderr.String())
	}
	if err := <-answered; strings.HasPrefix(err.Error(), "answered") {
		t.Errorf("the waiting request was %v", err)
	}
}
