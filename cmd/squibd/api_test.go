package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/psci"
)

// noHypervisor reports that squibdBin cannot start a VM on this machine,
// decided as squibd decides it: by opening the hypervisor.
var noHypervisor = sync.OnceValue(func() bool {
	_, err := openHypervisor()
	return errors.Is(err, hv.ErrNoHypervisor)
})

// loadFault is the start of the fault of a snapshot load of files that do
// not exist: squibd checks the files before it opens the hypervisor, so it
// is the state file's problem on every host.
func loadFault() string {
	return "Load snapshot error: snapshot: "
}

func TestAPIGet(t *testing.T) {
	d := startDaemon(t, squibdBin, "--id", "vm_1")
	var info map[string]string
	d.get("/", &info)
	want := map[string]string{"id": "vm_1", "state": "Not started", "vmm_version": version, "app_name": "squibd"}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("GET /: %v, want %v", info, want)
	}
	var v map[string]string
	d.get("/version", &v)
	if v["firecracker_version"] != version {
		t.Errorf("GET /version: %v", v)
	}
	var mc map[string]any
	d.get("/machine-config", &mc)
	wantMC := map[string]any{"vcpu_count": 1.0, "mem_size_mib": 128.0, "smt": false, "track_dirty_pages": false, "huge_pages": "None"}
	if !reflect.DeepEqual(mc, wantMC) {
		t.Errorf("GET /machine-config: %v, want %v", mc, wantMC)
	}
	var full map[string]json.RawMessage
	d.get("/vm/config", &full)
	for key, want := range map[string]string{
		"boot-source":    `{"kernel_image_path":"","initrd_path":null,"boot_args":null}`,
		"machine-config": `{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}`,
		"drives":         `[]`, "network-interfaces": `[]`, "vsock": `null`, "logger": `null`, "metrics": `null`, "entropy": `null`,
	} {
		if string(full[key]) != want {
			t.Errorf("GET /vm/config: %s is %s, want %s", key, full[key], want)
		}
	}
}

func TestAPIMachineConfig(t *testing.T) {
	d := startDaemon(t, squibdBin)
	check := func(want string) {
		t.Helper()
		_, got, _ := d.do("GET", "/machine-config", "")
		if got != want {
			t.Errorf("GET /machine-config: %s, want %s", got, want)
		}
	}
	d.ok("PUT", "/machine-config", `{"vcpu_count": 4, "mem_size_mib": 512, "track_dirty_pages": true}`)
	check(`{"vcpu_count":4,"mem_size_mib":512,"smt":false,"track_dirty_pages":true,"huge_pages":"None"}`)
	d.ok("PATCH", "/machine-config", `{"mem_size_mib": 1024}`)
	check(`{"vcpu_count":4,"mem_size_mib":1024,"smt":false,"track_dirty_pages":true,"huge_pages":"None"}`)
	// PUT resets what it leaves out.
	d.ok("PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256, "smt": false, "cpu_template": "None", "huge_pages": "None"}`)
	check(`{"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}`)
	// A refused change changes nothing.
	d.fault("PATCH", "/machine-config", `{"vcpu_count": 0}`, "vcpu_count 0: the number of vCPUs must be between 1 and")
	check(`{"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}`)
}

// TestAPIFaults sends every kind of bad request to a squibd that is not
// started, then checks that none of them changed anything.
func TestAPIFaults(t *testing.T) {
	d := startDaemon(t, squibdBin)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing", "file")
	kernel := writeKernel(t, 16<<20)
	fifo := filepath.Join(dir, "fifo") // opening it must not wait for a writer
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	const deser = "An error occurred when deserializing the json body of a request: "
	cases := []struct{ method, path, body, want string }{
		{"GET", "/nope", "", "Invalid request method and/or path: GET nope."},
		{"GET", "/vm", "", "Invalid request method and/or path: GET vm."},
		{"DELETE", "/machine-config", "", "Invalid request method and/or path: DELETE machine-config."},
		{"POST", "/actions", `{"action_type":"InstanceStart"}`, "Invalid request method and/or path: POST actions."},
		{"GET", "/machine-config/", "", "Invalid request method and/or path: GET machine-config/."},
		{"GET", "//machine-config", "", "Invalid request method and/or path: GET /machine-config."},
		{"PUT", "/snapshot", `{}`, "Invalid request method and/or path: PUT snapshot."},
		{"PUT", "/snapshot/delete", `{}`, "Invalid request method and/or path: PUT snapshot/delete."},
		{"GET", "/", `{}`, "GET request cannot have a body."},
		{"PUT", "/machine-config", "", "Empty PUT request."},
		{"PATCH", "/machine-config", "", "Empty PATCH request."},
		{"PATCH", "/machine-config", "{}", "Empty PATCH request."},
		{"PUT", "/machine-config", "vcpu_count=2", deser + "invalid character 'v'"},
		{"PUT", "/machine-config", `{"vcpu_count": 2}`, deser + "missing field `mem_size_mib`."},
		{"PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256, "bogus": 1}`, deser + `json: unknown field "bogus".`},
		{"PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256} {}`, deser + "trailing characters"},
		{"PUT", "/machine-config", `{"vcpu_count": "two", "mem_size_mib": 256}`, deser + "json: cannot unmarshal string"},
		// Duplicate keys are refused, as Firecracker (serde) refuses them,
		// instead of the last one winning; in any case, at any depth.
		{"PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256, "vcpu_count": 4}`, deser + "duplicate field `vcpu_count`."},
		{"PATCH", "/machine-config", `{"mem_size_mib": 256, "MEM_SIZE_MIB": 512}`, deser + "duplicate field `MEM_SIZE_MIB` (also given as `mem_size_mib`)."},
		{"PATCH", "/vm", `{"state": "Paused", "state": "Resumed"}`, deser + "duplicate field `state`."},
		{"PUT", "/actions", `{"action_type": "FlushMetrics", "action_type": "InstanceStart"}`, deser + "duplicate field `action_type`."},
		{"PUT", "/logger", `{"level": "Info", "level": "Debug"}`, deser + "duplicate field `level`."},
		{"PUT", "/metrics", fmt.Sprintf(`{"metrics_path": %q, "metrics_path": %q}`, missing, filepath.Join(dir, "m")), deser + "duplicate field `metrics_path`."},
		{"PUT", "/snapshot/load", `{"snapshot_path": "s", "mem_backend": {"backend_type": "File", "backend_path": "m", "backend_path": "n"}}`,
			deser + "duplicate field `backend_path` in `mem_backend`."},
		{"PUT", "/machine-config", `{"vcpu_count": 200, "mem_size_mib": 256}`, "Machine config error: vcpu_count 200"},
		{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 0}`, "Machine config error: mem_size_mib 0"},
		{"PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256, "smt": true}`, "Enabling simultaneous multithreading is not supported on aarch64."},
		{"PATCH", "/machine-config", `{"huge_pages": "2M"}`, `huge_pages "2M" is not supported`},
		{"PATCH", "/machine-config", `{"cpu_template": "T2"}`, `cpu_template "T2" is not supported`},
		{"PUT", "/boot-source", `{}`, deser + "missing field `kernel_image_path`."},
		{"PUT", "/boot-source", `{"kernel_image_path": "` + missing + `"}`, "Boot source error: The kernel file cannot be opened: open " + missing},
		{"PUT", "/boot-source", `{"kernel_image_path": "` + dir + `"}`, "not a regular file"},
		{"PUT", "/boot-source", `{"kernel_image_path": "` + fifo + `"}`, "not a regular file"},
		{"PUT", "/boot-source", `{"kernel_image_path": "/dev/null"}`, "Boot source error: The kernel file cannot be opened: /dev/null: not a regular file"},
		{"PUT", "/boot-source", `{"kernel_image_path": "` + kernel + `", "initrd_path": "` + missing + `"}`, "Boot source error: The initrd file cannot be opened: open " + missing},
		{"PUT", "/boot-source", `{"kernel_image_path": "x", "root": "/dev/vda"}`, deser + `json: unknown field "root"`},
		{"PUT", "/actions", `{}`, deser + "missing field `action_type`."},
		{"PUT", "/actions", `{"action_type": "Reboot"}`, deser + "unknown variant `Reboot`"},
		{"PUT", "/actions", `{"action_type": "InstanceStart", "now": true}`, deser + `json: unknown field "now"`},
		{"PUT", "/actions", `{"action_type": "InstanceStart"}`, "Start microvm error: Cannot start microvm without kernel configuration."},
		{"PUT", "/actions", `{"action_type": "FlushMetrics"}`, "The requested operation is not supported before starting the microVM."},
		{"PUT", "/actions", `{"action_type": "SendCtrlAltDel"}`, "SendCtrlAltDel does not supported on aarch64."}, // sic, Firecracker's words
		{"PATCH", "/vm", `{"state": "Paused"}`, "The requested operation is not supported before starting the microVM."},
		{"PATCH", "/vm", `{"state": "Resumed"}`, "The requested operation is not supported before starting the microVM."},
		{"PATCH", "/vm", `{"state": "Stopped"}`, deser + "unknown variant `Stopped`, expected `Paused` or `Resumed`."},
		{"PATCH", "/vm", `{}`, deser + "missing field `state`."},
		{"PATCH", "/vm", `{"state": "Paused", "force": true}`, deser + `json: unknown field "force"`},
		{"PUT", "/logger", `{"level": "Loud"}`, deser + `invalid log level "Loud"`},
		{"PUT", "/logger", `{"module": "api"}`, "Logger error: filtering by module is not supported"},
		{"PUT", "/logger", `{"log_path": "` + missing + `"}`, "Logger error: open " + missing},
		{"PUT", "/logger", `{"colour": true}`, deser + `json: unknown field "colour"`},
		{"PUT", "/metrics", `{}`, deser + "missing field `metrics_path`."},
		{"PUT", "/metrics", `{"metrics_path": "` + missing + `"}`, "Metrics error: Cannot initialize the metrics system due to bad user input: open " + missing},
		{"PUT", "/snapshot/create", `{"snapshot_path": "s", "mem_file_path": "m"}`, "The requested operation is not supported before starting the microVM."},
		{"PUT", "/snapshot/create", `{"snapshot_path": "s"}`, deser + "missing field `mem_file_path`."},
		{"PUT", "/snapshot/create", `{"snapshot_path": "s", "mem_file_path": "m", "snapshot_type": "Incremental"}`, deser + "unknown variant `Incremental`"},
		{"PUT", "/snapshot/create", `{"snapshot_path": "s", "mem_file_path": "m", "version": "1.0.0"}`, deser + `json: unknown field "version"`},
		{"PUT", "/snapshot/load", `{"snapshot_path": "s"}`, deser + "missing field: either `mem_backend` or `mem_file_path` is required."},
		{"PUT", "/snapshot/load", `{"snapshot_path": "s", "mem_file_path": "m", "mem_backend": {"backend_type": "File", "backend_path": "m"}}`,
			deser + "too many fields: either `mem_backend` or `mem_file_path` exclusively is required."},
		{"PUT", "/snapshot/load", `{"snapshot_path": "s", "mem_backend": {"backend_type": "Disk", "backend_path": "m"}}`, deser + "unknown variant `Disk`"},
		{"PUT", "/snapshot/load", `{"snapshot_path": "s", "mem_backend": {"backend_type": "File", "backend_path": "m", "x": 1}}`, deser + `json: unknown field "x"`},
		{"PUT", "/snapshot/load", `{"mem_file_path": "m"}`, deser + "missing field `snapshot_path`."},
		{"PUT", "/snapshot/load", `{"snapshot_path": "s", "mem_file_path": "m"}`, loadFault()},
		{"PUT", "/drives/rootfs", `{"drive_id": "rootfs"}`, deser + "missing field `is_root_device`."},
		{"PATCH", "/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": "` + missing + `"}`, "The requested operation is not supported before starting the microVM."},
		{"PUT", "/network-interfaces/1", `{"iface_id": "1"}`, "give exactly one backend"},
		{"PUT", "/vsock", `{"guest_cid": 3}`, deser + "missing field `uds_path`."},
		{"PUT", "/vsock", `{"guest_cid": 2, "uds_path": "v.sock"}`, "Vsock config error: guest CID 2 is reserved"},
		{"PUT", "/vsock", `{"guest_cid": 3, "uds_path": "` + dir + `"}`, "Vsock config error: " + dir + " exists and is not a socket"},
		{"PUT", "/entropy", `{"rate_limiter": null, "bogus": 1}`, deser + `json: unknown field "bogus".`},
		{"PUT", "/entropy", `{"rate_limiter": {"bandwidth": {"size": 1024, "refill_time": 100}}}`,
			"Entropy device error: squibd does not rate-limit the entropy device"},
		{"PUT", "/entropy", `{"rate_limiter": {"ops": {"refill_time": 100}}}`, deser + "missing field `size`."},
		{"GET", "/mmds", "", "squibd does not support MMDS yet"},
		{"PUT", "/machine-config", strings.Repeat(" ", 51201), "Request payload with size 51201 is larger than the limit of 51200 allowed by server."},
	}
	for _, c := range cases {
		d.fault(c.method, c.path, c.body, c.want)
	}
	if s := d.state(); s != "Not started" {
		t.Errorf("state %q after the faults", s)
	}
	_, full, _ := d.do("GET", "/vm/config", "")
	want := `{"boot-source":{"kernel_image_path":"","initrd_path":null,"boot_args":null},"machine-config":{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"},"logger":null,"metrics":null,`
	if !strings.HasPrefix(full, want) {
		t.Errorf("the faults changed the configuration: %s", full)
	}
	// Every fault was logged.
	if n := strings.Count(d.stderr.String(), `msg="API request failed"`); n != len(cases) {
		t.Errorf("%d faults logged, want %d", n, len(cases))
	}
}

// TestAPIUndefinedMethod checks that a method no route defines is refused
// as an invalid method and path, HEAD included (Go would answer it as GET).
func TestAPIUndefinedMethod(t *testing.T) {
	d := startDaemon(t, squibdBin)
	d.fault("DELETE", "/machine-config", "", "Invalid request method and/or path: DELETE machine-config.")
	d.fault("OPTIONS", "/", "", "Invalid request method and/or path: OPTIONS .")
	// A HEAD answer has no body: the fault is in the status and the log,
	// complete once squibd has exited.
	paths := []string{"/", "/machine-config", "/vm/config"}
	for _, path := range paths {
		status, body, err := d.do("HEAD", path, "")
		if err != nil || status != http.StatusBadRequest || body != "" {
			t.Errorf("HEAD %s: %d %q %v; want 400", path, status, body, err)
		}
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.wait()
	for _, path := range paths {
		want := fmt.Sprintf(`msg="API request failed" method=HEAD path=%s fault="Invalid request method and/or path: HEAD %s."`,
			path, strings.TrimPrefix(path, "/"))
		if !strings.Contains(d.stderr.String(), want) {
			t.Errorf("HEAD %s: the log lacks %s:\n%s", path, want, d.stderr.String())
		}
	}
}

// TestAPILoadAfterBootResource checks that each boot resource, configured
// alone, makes a later snapshot load refused.
func TestAPILoadAfterBootResource(t *testing.T) {
	kernel := writeKernel(t, 16<<20)
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256}`},
		{"PATCH", "/machine-config", `{"vcpu_count": 2}`},
		{"PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path": %q}`, kernel)},
		{"PUT", "/entropy", `{}`},
		{"PUT", "/vsock", fmt.Sprintf(`{"guest_cid": 3, "uds_path": %q}`, filepath.Join(t.TempDir(), "v.sock"))},
	} {
		d := startDaemon(t, squibdBin)
		d.ok(c.method, c.path, c.body)
		d.fault("PUT", "/snapshot/load", `{"snapshot_path": "s", "mem_file_path": "m"}`,
			"Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.")
	}
}

// TestAPIBodyLimit checks the 51200-byte limit from both sides, with and
// without a Content-Length.
func TestAPIBodyLimit(t *testing.T) {
	d := startDaemon(t, squibdBin)
	body := `{"vcpu_count": 2, "mem_size_mib": 256}`
	d.ok("PUT", "/machine-config", body+strings.Repeat(" ", 51200-len(body)))
	d.fault("PUT", "/machine-config", body+strings.Repeat(" ", 51201-len(body)), "larger than the limit of 51200")
	unsized := struct{ io.Reader }{strings.NewReader(body + strings.Repeat(" ", 100_000))}
	req, _ := http.NewRequest("PUT", "http://localhost/machine-config", unsized) // sent chunked
	resp, err := d.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "is larger than the limit of 51200 allowed by server.") {
		t.Errorf("PUT of an unsized body: %s %s", resp.Status, b)
	}
	d.ok("PATCH", "/machine-config", `{"vcpu_count": 3}`) // the server is still fine
}

// TestAPIPreBootFlow configures a microVM in the Firecracker Go SDK's
// order. Where there is no hypervisor, InstanceStart fails: the fault and
// the log say why and the microVM stays "Not started". Where there is one,
// the test does not start the microVM (its kernel would not boot) and checks
// the rest.
func TestAPIPreBootFlow(t *testing.T) {
	d := startDaemon(t, squibdBin)
	dir := t.TempDir()
	logPath, metricsPath := filepath.Join(dir, "log"), filepath.Join(dir, "metrics")
	kernel := writeKernel(t, 16<<20)
	d.ok("PUT", "/logger", fmt.Sprintf(`{"log_path": %q, "level": "debug", "show_level": false, "show_log_origin": false}`, logPath))
	d.ok("PUT", "/metrics", fmt.Sprintf(`{"metrics_path": %q}`, metricsPath))
	// Logger and metrics are not boot resources: loading a snapshot would still be allowed.
	d.fault("PUT", "/snapshot/load", `{"snapshot_path": "s", "mem_file_path": "m"}`, loadFault())
	d.fault("PUT", "/metrics", fmt.Sprintf(`{"metrics_path": %q}`, metricsPath), "Reinitialization of metrics not allowed.")
	d.ok("PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}`)
	var mc map[string]any
	d.get("/machine-config", &mc)
	d.ok("PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path": %q, "boot_args": "console=ttyAMA0"}`, kernel))
	d.fault("PUT", "/snapshot/load", `{"snapshot_path": "s", "mem_file_path": "m"}`,
		"Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.")
	if noHypervisor() {
		for range 2 { // a failed start can be retried
			d.fault("PUT", "/actions", `{"action_type": "InstanceStart"}`, "Start microvm error: no usable hypervisor: ")
			if s := d.state(); s != "Not started" {
				t.Fatalf("state %q after a failed start", s)
			}
		}
	}
	log, _ := os.ReadFile(logPath)
	if noHypervisor() && !strings.Contains(string(log), `msg="the microVM failed to start" err="Start microvm error: no usable hypervisor`) {
		t.Errorf("the log does not say why the start failed:\n%s", log)
	}
	if strings.Contains(string(log), "level=") {
		t.Errorf("show_level false, but the log shows levels:\n%s", log)
	}
	if !strings.Contains(string(log), `msg="API request" method=PUT path=/boot-source status=204`) {
		t.Errorf("the log lacks the requests:\n%s", log)
	}
	// PUT /logger again: the same file, other settings; then Off.
	d.ok("PUT", "/logger", `{"level": "TRACE", "show_level": true, "show_log_origin": true}`)
	d.get("/version", new(any))
	d.ok("PUT", "/logger", `{"level": "Off"}`)
	d.get("/version", new(any))
	log, _ = os.ReadFile(logPath)
	if strings.Count(string(log), "path=/version") != 1 || !regexp.MustCompile(`level=DEBUG source=\S+server.go:\d+ msg="API request" method=GET path=/version`).Match(log) {
		t.Errorf("the log after PUT /logger Trace then Off:\n%s", log)
	}
	var full map[string]json.RawMessage
	d.get("/vm/config", &full)
	want := fmt.Sprintf(`{"kernel_image_path":%q,"initrd_path":null,"boot_args":"console=ttyAMA0"}`, kernel)
	if string(full["boot-source"]) != want || !strings.Contains(string(full["metrics"]), metricsPath) {
		t.Errorf("GET /vm/config: %s", full)
	}
	if st, err := os.Stat(metricsPath); err != nil || st.Size() != 0 {
		t.Errorf("metrics before boot: %v %v", st, err) // Firecracker writes them once the VM runs
	}
}

// answerBound is how long a request that must not wait may take: far more
// than it needs, far less than forever.
const answerBound = 3 * time.Second

// mkfifo makes a FIFO. When the test ends, before squibd is stopped, the
// FIFO is opened read-write once (a reader and a writer), so that a squibd
// stuck opening it comes free and the test fails instead of hanging.
func mkfifo(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK, 0); err == nil {
			time.Sleep(10 * time.Millisecond)
			unix.Close(fd)
		}
	})
	return path
}

// putBeside sends a PUT that must be answered at once with 204 while
// another client's GET / is answered too.
func putBeside(t *testing.T, d *daemon, path, body string) {
	t.Helper()
	type answer struct {
		status int
		body   string
		err    error
	}
	put := make(chan answer, 1)
	go func() {
		status, body, err := d.doWithin(answerBound, "PUT", path, body)
		put <- answer{status, body, err}
	}()
	if status, body, err := d.doWithin(answerBound, "GET", "/", ""); err != nil || status != http.StatusOK {
		t.Fatalf("GET / beside PUT %s: %d %q %v", path, status, body, err)
	}
	if a := <-put; a.err != nil || a.status != http.StatusNoContent {
		t.Fatalf("PUT %s %s: %d %q %v; want 204 at once", path, body, a.status, a.body, a.err)
	}
}

// TestAPILoggerFIFO points the log at a FIFO nobody reads. Firecracker
// opens it read-write and non-blocking, so PUT /logger succeeds at once;
// GET / from another client is answered meanwhile, and every request is
// answered once the pipe is full, each logging or dropping its line
// without waiting (the api package's tests check that the dropped lines are
// counted in the metrics). What the pipe took is whole lines, and lines
// come again once it is read.
func TestAPILoggerFIFO(t *testing.T) {
	d := startDaemon(t, squibdBin)
	fifo := mkfifo(t, "log.fifo")
	putBeside(t, d, "/logger", fmt.Sprintf(`{"log_path": %q, "level": "Debug"}`, fifo))
	const requests = 2000 // about 100 bytes of log each: the 64 KiB pipe fills
	for i := range requests {
		if status, body, err := d.doWithin(answerBound, "GET", "/version", ""); err != nil || status != http.StatusOK {
			t.Fatalf("request %d to a squibd logging to a full FIFO: %d %q %v", i, status, body, err)
		}
	}
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	read := func() string {
		var b strings.Builder
		buf := make([]byte, 64<<10)
		for {
			r.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := r.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				return b.String()
			}
		}
	}
	held := read()
	lines := strings.SplitAfter(held, "\n")
	if lines[len(lines)-1] != "" {
		t.Errorf("the FIFO ends in a cut line: %q", lines[len(lines)-1])
	}
	lines = lines[:len(lines)-1]
	for i, l := range lines {
		if !strings.HasPrefix(l, "time=") {
			t.Fatalf("line %d in the FIFO is not a whole log line: %q", i, l)
		}
	}
	if len(lines) == 0 || len(lines) >= requests {
		t.Errorf("the FIFO held %d lines; want some, but not all %d", len(lines), requests)
	}
	d.get("/version", new(any))
	if after := read(); !strings.Contains(after, `msg="API request" method=GET path=/version status=200`) {
		t.Errorf("nothing logged once the FIFO was read: %q", after)
	}
}

// TestAPIMetricsFIFO points the metrics at a FIFO nobody reads: PUT
// /metrics is answered at once, and GET / from another client meanwhile.
func TestAPIMetricsFIFO(t *testing.T) {
	d := startDaemon(t, squibdBin)
	fifo := mkfifo(t, "metrics.fifo")
	putBeside(t, d, "/metrics", fmt.Sprintf(`{"metrics_path": %q}`, fifo))
	if s := d.state(); s != "Not started" {
		t.Errorf("state %q", s)
	}
}

// TestAPILoadBadFiles loads damaged snapshots: each fault names the file
// and its problem, on a host without a hypervisor too, since squibd checks
// the files before it opens the hypervisor.
func TestAPILoadBadFiles(t *testing.T) {
	dir := t.TempDir()
	good, other := snapFiles(dir, "good"), snapFiles(dir, "other")
	writeSnapshot(t, good, snapState("", psci.On), testRAM(1), nil)
	writeSnapshot(t, other, snapState("", psci.On), testRAM(2), nil)
	state, err := os.ReadFile(good.State)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	flipped := bytes.Clone(state)
	flipped[len(flipped)/2] ^= 0x10
	corrupt, truncated := write("corrupt.state", flipped), write("truncated.state", state[:len(state)-100])
	none := filepath.Join(dir, "none.mem")
	d := startDaemon(t, squibdBin)
	const prefix = "Load snapshot error: snapshot: "
	for _, c := range []struct{ name, state, mem, want string }{
		{"a flipped bit", corrupt, good.Memory, prefix + corrupt + ": checksum mismatch: "},
		{"truncated", truncated, good.Memory, prefix + truncated + ": file truncated: "},
		{"a memory file as the state file", good.Memory, good.Memory, prefix + good.Memory + ": not a squib snapshot file"},
		{"the memory of another snapshot", good.State, other.Memory, prefix + other.Memory + ": memory file does not match: "},
		{"no memory file", good.State, none, prefix + none + ": memory file missing"},
	} {
		body := fmt.Sprintf(`{"snapshot_path": %q, "mem_backend": {"backend_type": "File", "backend_path": %q}}`, c.state, c.mem)
		d.fault("PUT", "/snapshot/load", body, c.want)
	}
	if s := d.state(); s != "Not started" {
		t.Errorf("state %q after the failed loads", s)
	}
	if noHypervisor() { // sound files: then the hypervisor is missed
		body := fmt.Sprintf(`{"snapshot_path": %q, "mem_backend": {"backend_type": "File", "backend_path": %q}}`, good.State, good.Memory)
		d.fault("PUT", "/snapshot/load", body, "Load snapshot error: no usable hypervisor")
	}
}
