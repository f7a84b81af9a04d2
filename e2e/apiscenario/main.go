// Command apiscenario drives squibd's API inside the lab's L1 host, where
// there is no curl, for e2e's TestAPI and BenchmarkAPILab. It runs /squibd
// with the lab guest (/guest/Image, /guest/initrd.gz) on L1's KVM, speaks
// HTTP to its socket, prints SQUIB-API-... markers and ends with
// SQUIB-API-OK, or with SQUIB-API-FAIL and exit status 1 at the first
// failure. The scenario is its argument:
//
//	lifecycle  boot a counting guest (squib.test=counter) from the ext4 root
//	           drive with the requests Firecracker's Go SDK sends, in its
//	           order (machine, boot source, drives, a network interface on
//	           a tap, vsock, start); the vsock socket answers, the
//	           interface's rate limiter is patched; pause and resume it
//	           through PATCH /vm and the client commands, seeing GET / and
//	           the guest's console agree; every fault after the start; the
//	           metrics FlushMetrics writes; 50 clients pausing and resuming
//	           at once; SIGTERM
//	poweroff   boot a guest that powers off: squibd exits 0, socket removed
//	config     boot a counting guest from --config-file with the API; SIGTERM
//	bench N    time N PATCH /vm (Paused and Resumed in turn) and N GET / to
//	           a running guest while 16 clients send GET / in a loop
package main

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	kernel = "/guest/Image"
	initrd = "/guest/initrd.gz"
	// The lab guest's ext4 root filesystem, and where a scenario unpacks
	// it to boot from it as a root drive.
	rootfsGz = "/guest/rootfs.ext4.gz"
	rootfs   = "/tmp/rootfs.ext4"
	// bootLimit bounds a guest's boot to its first line of output: the
	// lab is emulated, and slower when the machine is loaded.
	bootLimit = 3 * time.Minute
	// freeze is how long a paused guest is watched; the counting guest
	// prints a line a second.
	freeze = 3 * time.Second
)

func bootArgs(test string) string { return "console=ttyAMA0 earlycon panic=-1 squib.test=" + test }

func main() {
	scenarios := map[string]func([]string) error{
		"lifecycle": lifecycle, "poweroff": poweroff, "config": config, "bench": bench,
	}
	if len(os.Args) < 2 || scenarios[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: apiscenario lifecycle|poweroff|config|bench N")
		os.Exit(2)
	}
	if err := scenarios[os.Args[1]](os.Args[2:]); err != nil {
		fmt.Printf("SQUIB-API-FAIL %v\n", err)
		os.Exit(1)
	}
	fmt.Println("SQUIB-API-OK")
}

// console is squibd's standard output, the guest's console: it passes it
// on to ours and keeps it, to read the guest's counter from.
type console struct {
	mu  sync.Mutex
	buf []byte
}

var counterRE = regexp.MustCompile(`SQUIB-GUEST-COUNTER=(\d+)\r?\n`)

func (c *console) Write(p []byte) (int, error) {
	os.Stdout.Write(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.buf)
}

// counter returns the last counter the guest printed, 0 if none.
func (c *console) counter() int {
	m := counterRE.FindAllStringSubmatch(c.String(), -1)
	if len(m) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

// waitAbove waits until the guest has printed a counter above n.
func (c *console) waitAbove(n int, limit time.Duration) error {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c.counter() > n {
			return nil
		}
	}
	return fmt.Errorf("the guest's counter stayed at %d for %v", c.counter(), limit)
}

// frozen checks that the guest, just paused, prints nothing for a while.
// It first lets what the guest printed before the pause come through the
// pipe.
func (c *console) frozen() error {
	time.Sleep(300 * time.Millisecond)
	before := c.String()
	time.Sleep(freeze)
	if after := c.String(); after != before {
		return fmt.Errorf("the guest printed %q while paused", after[len(before):])
	}
	return nil
}

// daemon is a /squibd process serving the API on sock.
type daemon struct {
	cmd    *exec.Cmd
	sock   string
	con    *console
	http   *http.Client
	exited chan struct{}
}

// start starts /squibd --api-sock sock args... and waits until its API
// answers, as the Go SDK does: every 10 ms, the socket file exists, then
// GET /machine-config succeeds.
func start(sock string, args ...string) (*daemon, error) {
	d := &daemon{sock: sock, con: &console{}, exited: make(chan struct{})}
	d.cmd = exec.Command("/squibd", append([]string{"--api-sock", sock}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.con, os.Stderr
	began := time.Now()
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		d.cmd.Wait()
		close(d.exited)
	}()
	d.http = &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 64,
	}}
	for {
		if _, err := os.Stat(sock); err == nil {
			if status, _, err := d.do("GET", "/machine-config", ""); err == nil && status == http.StatusOK {
				break
			}
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("squibd exited before its API came up: %v", d.cmd.ProcessState)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Since(began) > 30*time.Second {
			d.kill()
			return nil, fmt.Errorf("the API did not come up")
		}
	}
	fmt.Printf("SQUIB-API-READY sock=%s ms=%d\n", sock, time.Since(began).Milliseconds())
	return d, nil
}

// kill ends the process if it still runs (deferred by every scenario).
func (d *daemon) kill() {
	select {
	case <-d.exited:
	default:
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// wait waits for the process to exit, then checks that it exited with
// status want and removed its socket file.
func (d *daemon) wait(want int, limit time.Duration) error {
	select {
	case <-d.exited:
	case <-time.After(limit):
		return fmt.Errorf("squibd still runs after %v", limit)
	}
	if got := d.cmd.ProcessState.ExitCode(); got != want {
		return fmt.Errorf("squibd exited with status %d, want %d", got, want)
	}
	if _, err := os.Lstat(d.sock); !os.IsNotExist(err) {
		return fmt.Errorf("squibd exited, but its socket file is still there (%v)", err)
	}
	return nil
}

// sigterm stops squibd with SIGTERM: exit status 128+15, socket removed.
func (d *daemon) sigterm() error {
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.wait(128+int(syscall.SIGTERM), time.Minute); err != nil {
		return fmt.Errorf("after SIGTERM: %w", err)
	}
	fmt.Printf("SQUIB-API-SIGTERM status=%d\n", d.cmd.ProcessState.ExitCode())
	return nil
}

// do sends a request with body (none if empty) as JSON, returning the
// status and the answer's body.
func (d *daemon) do(method, path, body string) (int, string, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://localhost"+path, r)
	if err != nil {
		return 0, "", err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
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
func (d *daemon) ok(method, path, body string) error {
	status, resp, err := d.do(method, path, body)
	if err != nil || status != http.StatusNoContent || resp != "" {
		return fmt.Errorf("%s %s %s: %d %q %v; want 204 and no body", method, path, body, status, resp, err)
	}
	return nil
}

// get sends a GET that must succeed, decoding the answer into out.
func (d *daemon) get(path string, out any) error {
	status, resp, err := d.do("GET", path, "")
	if err != nil || status != http.StatusOK {
		return fmt.Errorf("GET %s: %d %q %v", path, status, resp, err)
	}
	if err := json.Unmarshal([]byte(resp), out); err != nil {
		return fmt.Errorf("GET %s: %v in %q", path, err, resp)
	}
	return nil
}

// fault sends a request that must fail with 400 and a fault message
// containing want.
func (d *daemon) fault(method, path, body, want string) error {
	status, resp, err := d.do(method, path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %v", method, path, err)
	}
	var f struct {
		Message *string `json:"fault_message"`
	}
	if status != http.StatusBadRequest || json.Unmarshal([]byte(resp), &f) != nil || f.Message == nil || !strings.Contains(*f.Message, want) {
		return fmt.Errorf("%s %s %s: %d %q; want 400 with a fault_message containing %q", method, path, body, status, resp, want)
	}
	return nil
}

// expectState checks the state GET / reports.
func (d *daemon) expectState(want string) error {
	var info struct{ State string }
	if err := d.get("/", &info); err != nil {
		return err
	}
	if info.State != want {
		return fmt.Errorf("GET / says %q, want %q", info.State, want)
	}
	return nil
}

// sdkStep sends one request of the Go SDK's boot sequence, printing it so
// that TestAPI can check the order.
func (d *daemon) sdkStep(method, path, body string) error {
	t := time.Now()
	var err error
	if method == "GET" {
		err = d.get(path, new(map[string]any))
	} else {
		err = d.ok(method, path, body)
	}
	if err != nil {
		return err
	}
	fmt.Printf("SQUIB-API-REQUEST %s %s us=%d\n", method, path, time.Since(t).Microseconds())
	return nil
}

// The lifecycle guest's devices besides its root drive, as the Go SDK
// configures them: interface "1" on a tap, and a vsock.
const (
	sdkTap   = "sdk0"
	sdkVsock = "/tmp/api.vsock"
)

// boot configures and starts a guest in the Go SDK's order (logger and
// metrics only when their paths are given); a guest with a root drive
// gets the SDK's network interface and vsock too.
func (d *daemon) boot(logPath, metricsPath string, vcpus, memMiB int, test string, rootDrive bool) error {
	steps := [][3]string{}
	if logPath != "" {
		steps = append(steps, [3]string{"PUT", "/logger",
			fmt.Sprintf(`{"log_path": %q, "level": "Info", "show_level": true, "show_log_origin": false}`, logPath)})
	}
	if metricsPath != "" {
		steps = append(steps, [3]string{"PUT", "/metrics", fmt.Sprintf(`{"metrics_path": %q}`, metricsPath)})
	}
	source := fmt.Sprintf(`{"kernel_image_path": %q, "initrd_path": %q, "boot_args": %q}`, kernel, initrd, bootArgs(test))
	if rootDrive {
		source = fmt.Sprintf(`{"kernel_image_path": %q, "boot_args": %q}`, kernel, bootArgs(test))
	}
	steps = append(steps,
		[3]string{"PUT", "/machine-config", fmt.Sprintf(`{"vcpu_count": %d, "mem_size_mib": %d, "smt": false}`, vcpus, memMiB)},
		[3]string{"GET", "/machine-config", ""},
		[3]string{"PUT", "/boot-source", source},
	)
	if rootDrive {
		if err := gunzip(rootfsGz, rootfs); err != nil {
			return err
		}
		steps = append(steps, [3]string{"PUT", "/drives/rootfs",
			fmt.Sprintf(`{"drive_id": "rootfs", "path_on_host": %q, "is_root_device": true, "is_read_only": false}`, rootfs)})
		if out, err := exec.Command("tunctl", "-t", sdkTap).CombinedOutput(); err != nil {
			return fmt.Errorf("tunctl -t %s: %v: %s", sdkTap, err, out)
		}
		steps = append(steps,
			[3]string{"PUT", "/network-interfaces/1",
				fmt.Sprintf(`{"iface_id": "1", "host_dev_name": %q, "guest_mac": "06:00:ac:10:00:02"}`, sdkTap)},
			[3]string{"PUT", "/vsock", fmt.Sprintf(`{"guest_cid": 3, "uds_path": %q, "vsock_id": "vsock0"}`, sdkVsock)})
	}
	steps = append(steps, [3]string{"PUT", "/actions", `{"action_type": "InstanceStart"}`})
	for _, s := range steps {
		if err := d.sdkStep(s[0], s[1], s[2]); err != nil {
			return err
		}
	}
	return nil
}

// sdkDevices checks the running lifecycle guest's network interface and
// vsock as the Go SDK would use them: PATCH /network-interfaces/1 takes a
// rate limiter that does not limit (one that would is among the faults); GET
// /vm/config lists both devices; a host-initiated vsock stream to a port
// the guest does not listen on is answered (the guest's driver resets it:
// squibd closes the stream without "OK"), so the device and the guest's
// driver are up.
func sdkDevices(d *daemon) error {
	if err := d.ok("PATCH", "/network-interfaces/1",
		`{"iface_id": "1", "rx_rate_limiter": {"bandwidth": {"size": 0, "refill_time": 0}}}`); err != nil {
		return err
	}
	var full struct {
		Nets []struct {
			ID  string `json:"iface_id"`
			Tap string `json:"host_dev_name"`
			MAC string `json:"guest_mac"`
		} `json:"network-interfaces"`
		Vsock struct {
			CID  int    `json:"guest_cid"`
			Path string `json:"uds_path"`
		} `json:"vsock"`
	}
	if err := d.get("/vm/config", &full); err != nil {
		return err
	}
	if len(full.Nets) != 1 || full.Nets[0].ID != "1" || full.Nets[0].Tap != sdkTap || full.Nets[0].MAC != "06:00:ac:10:00:02" ||
		full.Vsock.CID != 3 || full.Vsock.Path != sdkVsock {
		return fmt.Errorf("GET /vm/config: network interfaces %+v, vsock %+v", full.Nets, full.Vsock)
	}
	c, err := net.Dial("unix", sdkVsock)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.WriteString(c, "CONNECT 5000\n"); err != nil {
		return err
	}
	answer, err := io.ReadAll(c)
	if err != nil || len(answer) != 0 {
		return fmt.Errorf("vsock CONNECT to a port without a listener: %q, %v; want the stream closed", answer, err)
	}
	fmt.Printf("SQUIB-API-DEVICES tap=%s vsock=%s\n", sdkTap, sdkVsock)
	return nil
}

// gunzip writes the gzip'd file src, uncompressed, to dst.
func gunzip(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	z, err := gzip.NewReader(in)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, z); err != nil {
		out.Close()
		return fmt.Errorf("unpacking %s: %w", src, err)
	}
	return out.Close()
}

// timed sends a request that must succeed with 204, and returns how long
// it took.
func (d *daemon) timed(method, path, body string) (time.Duration, error) {
	t := time.Now()
	err := d.ok(method, path, body)
	return time.Since(t), err
}

// client runs a squibd client command, which must print the given state.
func client(cmd, sock, state string) error {
	out, err := exec.Command("/squibd", cmd, "--socket", sock).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "state:   "+state+"\n") {
		return fmt.Errorf("squibd %s: %v %q; want state %s", cmd, err, out, state)
	}
	return nil
}

// metricsLine is the part of a metrics line the scenario looks at.
type metricsLine struct {
	VCPU      map[string]uint64              `json:"vcpu"`
	Latencies map[string]uint64              `json:"latencies_us"`
	APIServer map[string]uint64              `json:"api_server"`
	Get       map[string]uint64              `json:"get_api_requests"`
	Put       map[string]uint64              `json:"put_api_requests"`
	Patch     map[string]uint64              `json:"patch_api_requests"`
	APILat    map[string]struct{ Count int } `json:"api_latencies_us"`
}

func readMetrics(path string) ([]metricsLine, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var lines []metricsLine
	for _, s := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var l metricsLine
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			return nil, fmt.Errorf("metrics line %q: %v", s, err)
		}
		lines = append(lines, l)
	}
	return lines, nil
}

// sum adds up, over lines, what pick returns: counters count since the
// previous line, and a line may also come from squibd's 60-second timer.
func sum(lines []metricsLine, pick func(metricsLine) uint64) uint64 {
	var n uint64
	for _, l := range lines {
		n += pick(l)
	}
	return n
}

func fails(l metricsLine) uint64 {
	var n uint64
	for _, group := range []map[string]uint64{l.Get, l.Put, l.Patch} {
		for k, v := range group {
			if strings.HasSuffix(k, "_fails") {
				n += v
			}
		}
	}
	return n
}

func lifecycle([]string) error {
	const sock, logPath, metricsPath = "/tmp/api.sock", "/tmp/squibd.log", "/tmp/squibd.metrics"
	d, err := start(sock, "--id", "lab-vm")
	if err != nil {
		return err
	}
	defer d.kill()
	began := time.Now()
	if err := d.boot(logPath, metricsPath, 2, 256, "counter", true); err != nil {
		return err
	}
	if err := d.expectState("Running"); err != nil {
		return err
	}
	if err := d.con.waitAbove(1, bootLimit); err != nil {
		return err
	}
	fmt.Printf("SQUIB-API-RUNNING counter=%d ms=%d\n", d.con.counter(), time.Since(began).Milliseconds())
	if err := sdkDevices(d); err != nil {
		return err
	}

	// Pause: GET / and "squibd status" say Paused, the guest stops.
	took, err := d.timed("PATCH", "/vm", `{"state": "Paused"}`)
	if err != nil {
		return err
	}
	fmt.Printf("SQUIB-API-PAUSED us=%d\n", took.Microseconds())
	if err := d.expectState("Paused"); err != nil {
		return err
	}
	if err := client("status", sock, "Paused"); err != nil {
		return err
	}
	if err := d.con.frozen(); err != nil {
		return err
	}
	frozen := d.con.counter()
	fmt.Printf("SQUIB-API-FROZEN counter=%d\n", frozen)
	if err := d.ok("PATCH", "/vm", `{"state": "Paused"}`); err != nil { // does nothing
		return err
	}
	if err := d.expectState("Paused"); err != nil {
		return err
	}

	// Resume: Running again, and the guest counts on.
	if took, err = d.timed("PATCH", "/vm", `{"state": "Resumed"}`); err != nil {
		return err
	}
	fmt.Printf("SQUIB-API-RESUMED us=%d\n", took.Microseconds())
	if err := d.expectState("Running"); err != nil {
		return err
	}
	if err := d.con.waitAbove(frozen, time.Minute); err != nil {
		return err
	}
	fmt.Printf("SQUIB-API-CONTINUED counter=%d\n", d.con.counter())
	if err := d.ok("PATCH", "/vm", `{"state": "Resumed"}`); err != nil { // does nothing
		return err
	}

	// The client commands change the same state.
	for _, c := range [][2]string{{"pause", "Paused"}, {"status", "Paused"}, {"resume", "Running"}, {"status", "Running"}} {
		if err := client(c[0], sock, c[1]); err != nil {
			return err
		}
	}
	n := d.con.counter()
	if err := d.con.waitAbove(n, time.Minute); err != nil {
		return fmt.Errorf("after squibd resume: %w", err)
	}
	fmt.Println("SQUIB-API-CLIENT pause status resume status")
	const patches = 6 // PATCH /vm so far: 4 above and the client's pause and resume

	// Every request that only makes sense before the start is refused.
	after := "The requested operation is not supported after starting the microVM."
	faults := [][4]string{
		{"PUT", "/actions", `{"action_type": "InstanceStart"}`, after},
		{"PUT", "/actions", `{"action_type": "InstanceStart"}`, after},
		{"PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path": %q}`, kernel), after},
		{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 128}`, after},
		{"PATCH", "/machine-config", `{"vcpu_count": 1}`, after},
		{"PUT", "/logger", `{"level": "Debug"}`, after},
		{"PUT", "/metrics", `{"metrics_path": "/tmp/other.metrics"}`, after},
		{"PUT", "/entropy", `{}`, after},
		{"PUT", "/network-interfaces/2", fmt.Sprintf(`{"iface_id": "2", "host_dev_name": %q}`, sdkTap), after},
		{"PUT", "/vsock", `{"guest_cid": 4, "uds_path": "/tmp/other.vsock"}`, after},
		{"PATCH", "/network-interfaces/1", `{"iface_id": "1", "tx_rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}}`,
			"squibd does not rate-limit"},
		{"PUT", "/snapshot/load", `{"snapshot_path": "/tmp/s", "mem_file_path": "/tmp/m"}`, after},
		{"PUT", "/snapshot/create", `{"snapshot_path": "/tmp/s", "mem_file_path": "/tmp/m"}`,
			"Create snapshot error: the microVM must be paused (PATCH /vm Paused) first"},
		{"PUT", "/actions", `{"action_type": "SendCtrlAltDel"}`, "SendCtrlAltDel does not supported on aarch64."},
	}
	for _, f := range faults {
		if err := d.fault(f[0], f[1], f[2], f[3]); err != nil {
			return err
		}
	}
	if err := d.expectState("Running"); err != nil {
		return err
	}
	var full struct {
		Boot struct {
			Kernel   string `json:"kernel_image_path"`
			BootArgs string `json:"boot_args"`
		} `json:"boot-source"`
		MC struct {
			VCPUs  int `json:"vcpu_count"`
			MemMiB int `json:"mem_size_mib"`
		} `json:"machine-config"`
	}
	if err := d.get("/vm/config", &full); err != nil {
		return err
	}
	if full.Boot.Kernel != kernel || full.Boot.BootArgs != bootArgs("counter") || full.MC.VCPUs != 2 || full.MC.MemMiB != 256 {
		return fmt.Errorf("GET /vm/config after the faults: %+v", full)
	}
	for _, f := range []string{"/tmp/other.metrics", "/tmp/s", "/tmp/m", "/tmp/other.vsock"} {
		if _, err := os.Stat(f); err == nil {
			return fmt.Errorf("a refused request created %s", f)
		}
	}
	fmt.Printf("SQUIB-API-FAULTS n=%d\n", len(faults))

	// FlushMetrics writes a line with what the guest and the API did.
	if err := d.ok("PUT", "/actions", `{"action_type": "FlushMetrics"}`); err != nil {
		return err
	}
	lines, err := readMetrics(metricsPath)
	if err != nil {
		return err
	}
	last := lines[len(lines)-1]
	switch {
	case len(lines) < 2: // one at the start, one on flush
		return fmt.Errorf("%d metrics lines, want at least 2", len(lines))
	case sum(lines, func(l metricsLine) uint64 { return l.VCPU["exit_mmio_write"] }) == 0,
		sum(lines, func(l metricsLine) uint64 { return l.VCPU["exit_mmio_read"] }) == 0:
		return fmt.Errorf("metrics count no MMIO exits: %+v", last.VCPU)
	case last.Latencies["vmm_pause_vm"] == 0 || last.Latencies["vmm_resume_vm"] == 0:
		return fmt.Errorf("metrics lack the pause and resume latencies: %+v", last.Latencies)
	case last.APIServer["process_startup_time_us"] == 0 || last.APIServer["process_startup_time_cpu_us"] == 0:
		return fmt.Errorf("metrics lack the start-up times: %+v", last.APIServer)
	}
	if n := sum(lines, func(l metricsLine) uint64 { return l.Patch["vm_count"] }); n != patches {
		return fmt.Errorf("metrics count %d PATCH /vm, want %d", n, patches)
	}
	if n := sum(lines, fails); n != uint64(len(faults)) {
		return fmt.Errorf("metrics count %d failed requests, want %d", n, len(faults))
	}
	if n := sum(lines, func(l metricsLine) uint64 { return uint64(l.APILat["patch_vm"].Count) }); n != patches {
		return fmt.Errorf("metrics have %d PATCH /vm latencies, want %d", n, patches)
	}
	fmt.Printf("SQUIB-API-METRICS lines=%d exit_mmio_write=%d exit_mmio_read=%d vmm_pause_vm_us=%d vmm_resume_vm_us=%d startup_cpu_us=%d\n",
		len(lines), sum(lines, func(l metricsLine) uint64 { return l.VCPU["exit_mmio_write"] }),
		sum(lines, func(l metricsLine) uint64 { return l.VCPU["exit_mmio_read"] }),
		last.Latencies["vmm_pause_vm"], last.Latencies["vmm_resume_vm"], last.APIServer["process_startup_time_cpu_us"])

	if err := storm(d, metricsPath, len(lines)); err != nil {
		return err
	}
	return d.sigterm()
}

// storm has 50 clients pause, resume and read the state of the running
// guest at once, each checking its answers; then checks that the metrics
// counted every request, and that the guest runs or stands still as GET /
// says.
func storm(d *daemon, metricsPath string, seen int) error {
	const clients, rounds = 50, 10
	var patches, gets atomic.Uint64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	began := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				var err error
				switch (i + r) % 3 {
				case 0:
					patches.Add(1)
					err = d.ok("PATCH", "/vm", `{"state": "Paused"}`)
				case 1:
					patches.Add(1)
					err = d.ok("PATCH", "/vm", `{"state": "Resumed"}`)
				case 2:
					gets.Add(1)
					var info struct{ ID, State string }
					err = d.get("/", &info)
					if err == nil && (info.ID != "lab-vm" || info.State != "Running" && info.State != "Paused") {
						err = fmt.Errorf("GET /: %+v", info)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("client %d, round %d: %w", i, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	took := time.Since(began)

	if err := d.ok("PUT", "/actions", `{"action_type": "FlushMetrics"}`); err != nil {
		return err
	}
	lines, err := readMetrics(metricsPath)
	if err != nil {
		return err
	}
	lines = lines[seen:]
	if n := sum(lines, func(l metricsLine) uint64 { return l.Patch["vm_count"] }); n != patches.Load() {
		return fmt.Errorf("metrics count %d PATCH /vm, the clients sent %d", n, patches.Load())
	}
	if n := sum(lines, func(l metricsLine) uint64 { return l.Get["instance_info_count"] }); n != gets.Load() {
		return fmt.Errorf("metrics count %d GET /, the clients sent %d", n, gets.Load())
	}
	if n := sum(lines, fails); n != 0 {
		return fmt.Errorf("metrics count %d failed requests", n)
	}

	// The guest is in the state GET / reports, and still follows PATCH /vm
	// both ways; it ends running.
	var info struct{ State string }
	if err := d.get("/", &info); err != nil {
		return err
	}
	if info.State != "Running" && info.State != "Paused" {
		return fmt.Errorf("GET / after the clients: %q", info.State)
	}
	follows := func(state string) error {
		var err error
		if state == "Paused" {
			err = d.con.frozen()
		} else {
			err = d.con.waitAbove(d.con.counter(), time.Minute)
		}
		if err != nil {
			return fmt.Errorf("after the clients, GET / says %s, but %w", state, err)
		}
		return nil
	}
	if err := follows(info.State); err != nil {
		return err
	}
	if info.State == "Running" {
		if err := d.ok("PATCH", "/vm", `{"state": "Paused"}`); err != nil {
			return err
		}
		if err := d.expectState("Paused"); err != nil {
			return err
		}
		if err := follows("Paused"); err != nil {
			return err
		}
	}
	if err := d.ok("PATCH", "/vm", `{"state": "Resumed"}`); err != nil {
		return err
	}
	if err := d.expectState("Running"); err != nil {
		return err
	}
	if err := follows("Running"); err != nil {
		return err
	}
	fmt.Printf("SQUIB-API-STORM clients=%d requests=%d patches=%d ms=%d state=%s counter=%d\n",
		clients, clients*rounds, patches.Load(), took.Milliseconds(), info.State, d.con.counter())
	return nil
}

func poweroff([]string) error {
	d, err := start("/tmp/off.sock")
	if err != nil {
		return err
	}
	defer d.kill()
	if err := d.boot("", "", 1, 128, "poweroff", false); err != nil {
		return err
	}
	if err := d.wait(0, bootLimit); err != nil {
		return err
	}
	if !strings.Contains(d.con.String(), "SQUIB-GUEST-POWEROFF") {
		return fmt.Errorf("squibd exited 0, but the guest did not say it powered off")
	}
	fmt.Println("SQUIB-API-POWEROFF status=0")
	return nil
}

func config([]string) error {
	const path, sock = "/tmp/vm.json", "/tmp/cfg.sock"
	cfg := fmt.Sprintf(`{"boot-source": {"kernel_image_path": %q, "initrd_path": %q, "boot_args": %q},
		"machine-config": {"vcpu_count": 1, "mem_size_mib": 128}, "drives": [], "network-interfaces": [], "vsock": null}`,
		kernel, initrd, bootArgs("counter"))
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	d, err := start(sock, "--id", "cfg-vm", "--config-file", path)
	if err != nil {
		return err
	}
	defer d.kill()
	// squibd answers only once the file is applied: the first answers
	// already show the microVM running.
	var info struct{ ID, State string }
	if err := d.get("/", &info); err != nil {
		return err
	}
	if info.ID != "cfg-vm" || info.State != "Running" {
		return fmt.Errorf("GET / right after the API came up: %+v", info)
	}
	if err := d.con.waitAbove(0, bootLimit); err != nil {
		return err
	}
	var full struct {
		Boot struct {
			BootArgs string `json:"boot_args"`
		} `json:"boot-source"`
		MC struct {
			VCPUs  int `json:"vcpu_count"`
			MemMiB int `json:"mem_size_mib"`
		} `json:"machine-config"`
	}
	if err := d.get("/vm/config", &full); err != nil {
		return err
	}
	if full.Boot.BootArgs != bootArgs("counter") || full.MC.VCPUs != 1 || full.MC.MemMiB != 128 {
		return fmt.Errorf("GET /vm/config: %+v", full)
	}
	if err := d.fault("PUT", "/actions", `{"action_type": "InstanceStart"}`, "not supported after starting"); err != nil {
		return err
	}
	fmt.Printf("SQUIB-API-CONFIG counter=%d\n", d.con.counter())
	return d.sigterm()
}

func bench(args []string) error {
	n := 200
	if len(args) > 0 {
		var err error
		if n, err = strconv.Atoi(args[0]); err != nil || n < 2 {
			return fmt.Errorf("bench: bad count %q", args[0])
		}
	}
	d, err := start("/tmp/bench.sock", "--id", "bench-vm")
	if err != nil {
		return err
	}
	defer d.kill()
	if err := d.boot("", "", 2, 256, "counter", false); err != nil {
		return err
	}
	if err := d.con.waitAbove(0, bootLimit); err != nil {
		return err
	}

	stop := make(chan struct{})
	var load sync.WaitGroup
	var loadErr atomic.Pointer[error]
	for range 16 {
		load.Add(1)
		go func() {
			defer load.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if status, resp, err := d.do("GET", "/", ""); err != nil || status != http.StatusOK {
					err = fmt.Errorf("load: GET /: %d %q %v", status, resp, err)
					loadErr.Store(&err)
					return
				}
			}
		}()
	}
	measure := func(method, path string, body func(i int) string, want int) ([]time.Duration, error) {
		lat := make([]time.Duration, n)
		for i := range n {
			t := time.Now()
			status, resp, err := d.do(method, path, body(i))
			lat[i] = time.Since(t)
			if err != nil || status != want {
				return nil, fmt.Errorf("%s %s: %d %q %v", method, path, status, resp, err)
			}
		}
		slices.Sort(lat)
		return lat, nil
	}
	states := []string{`{"state": "Paused"}`, `{"state": "Resumed"}`}
	patch, err := measure("PATCH", "/vm", func(i int) string { return states[i%2] }, http.StatusNoContent)
	var get []time.Duration
	if err == nil {
		get, err = measure("GET", "/", func(int) string { return "" }, http.StatusOK)
	}
	close(stop)
	load.Wait()
	if err != nil {
		return err
	}
	if e := loadErr.Load(); e != nil {
		return *e
	}
	if n%2 == 1 {
		if err := d.ok("PATCH", "/vm", states[1]); err != nil {
			return err
		}
	}
	if err := d.expectState("Running"); err != nil {
		return err
	}
	if err := d.con.waitAbove(d.con.counter(), time.Minute); err != nil {
		return fmt.Errorf("after the benchmark: %w", err)
	}
	us := func(d time.Duration) int64 { return d.Microseconds() }
	fmt.Printf("SQUIB-API-BENCH n=%d load=16 patch_vm_p50_us=%d patch_vm_p99_us=%d get_p50_us=%d get_p99_us=%d\n",
		n, us(patch[n/2]), us(patch[n*99/100]), us(get[n/2]), us(get[n*99/100]))
	return d.sigterm()
}
