package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/lab"
)

// The API's running phase is tested here, against a real squibd and a real
// guest on KVM in L1; cmd/squibd's tests cover what needs no VM. L1 has no
// curl: the client is apiscenario, a small Go program cross-compiled here
// (its package comment describes the scenarios).

// buildForL1 cross-compiles the command pkg (an e2e command such as
// ./apiscenario, or a tool of go.mod such as gvproxy's package) for L1 and
// returns the binary's path.
func buildForL1(t testing.TB, pkg string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), filepath.Base(pkg))
	build := exec.Command("go", "build", "-o", path, pkg)
	build.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("cross-compiling %s: %v\n%s", pkg, err, out)
	}
	return path
}

// TestAPI runs, in one L1:
//
//   - lifecycle: squibd --api-sock boots a counting guest (squib.test=counter)
//     from the ext4 root drive, a network interface on a tap and a vsock,
//     with the requests Firecracker's Go SDK sends, in its order; the
//     interface takes a rate limiter that does not limit and refuses one
//     that would, the vsock socket answers a stream; GET / says
//     Running, then Paused after PATCH /vm, when the guest's console stands
//     still, then Running after resuming, when it counts on; the client
//     commands pause, resume and show the same state; every request that is
//     refused after the start is; FlushMetrics writes a line with the vCPU
//     exit counts, the pause and resume latencies and every request counted;
//     50 clients pause, resume and read the state at once, all answered
//     right, the metrics counting each request and the guest running or not
//     as GET / then says; SIGTERM gives exit status 143 and removes the
//     socket.
//   - config: --config-file with the API boots the counting guest; GET / and
//     GET /vm/config describe it; SIGTERM as above.
//   - poweroff: a guest booted through the API powers off: squibd exits 0
//     and removes its socket.
//   - no-api: --no-api --config-file boots a guest that powers off: exit 0.
func TestAPI(t *testing.T) {
	lab.Require(t)
	scenario := buildForL1(t, "./apiscenario")
	config := filepath.Join(t.TempDir(), "vm.json")
	err := os.WriteFile(config, []byte(`{
		"boot-source": {"kernel_image_path": "/guest/Image", "initrd_path": "/guest/initrd.gz",
			"boot_args": "console=ttyAMA0 earlycon panic=-1 squib.test=poweroff"},
		"machine-config": {"vcpu_count": 2, "mem_size_mib": 128},
		"drives": [], "network-interfaces": [], "vsock": null}`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	results := lab.Run(t, lab.Options{
		Files: map[string]string{"/apiscenario": scenario, "/vm-poweroff.json": config},
		Commands: []lab.Command{
			{Name: "lifecycle", Args: []string{"/apiscenario", "lifecycle"}},
			{Name: "config", Args: []string{"/apiscenario", "config"}},
			{Name: "poweroff", Args: []string{"/apiscenario", "poweroff"}},
			{Name: "no-api", Args: []string{"/squibd", "--no-api", "--config-file", "/vm-poweroff.json"}},
		},
		Timeout: 8 * time.Minute,
	})
	t.Logf("lab time of the API tests: %s", time.Since(start).Round(100*time.Millisecond))
	markers := map[string][]string{
		"lifecycle": {"SQUIB-API-READY", "SQUIB-API-RUNNING", "SQUIB-API-DEVICES", "SQUIB-API-PAUSED", "SQUIB-API-FROZEN", "SQUIB-API-RESUMED",
			"SQUIB-API-CONTINUED", "SQUIB-API-CLIENT", "SQUIB-API-FAULTS", "SQUIB-API-METRICS", "SQUIB-API-STORM", "SQUIB-API-SIGTERM"},
		"config":   {"SQUIB-API-READY", "SQUIB-API-CONFIG", "SQUIB-API-SIGTERM"},
		"poweroff": {"SQUIB-API-READY", "SQUIB-GUEST-POWEROFF", "SQUIB-API-POWEROFF"},
		"no-api":   {"SQUIB-GUEST-INIT", "SQUIB-GUEST-POWEROFF"},
	}
	for _, res := range results {
		t.Run(res.Name, func(t *testing.T) {
			if res.ExitCode != 0 || res.Name != "no-api" && !strings.Contains(res.Output, "SQUIB-API-OK") {
				t.Fatalf("exit status %d (%s)\n%s", res.ExitCode, why(res.Output), res.Output)
			}
			if strings.Contains(res.Output, "panic:") || strings.Contains(res.Output, "goroutine ") {
				t.Fatalf("crashed:\n%s", res.Output)
			}
			for _, marker := range markers[res.Name] {
				if m := regexp.MustCompile(`(?m)` + marker + `.*$`).FindString(res.Output); m != "" {
					t.Log(strings.TrimSpace(m))
				} else {
					t.Errorf("no %s in the output\n%s", marker, res.Output)
				}
			}
		})
	}
	// The Go SDK's boot sequence, in its order.
	var got []string
	for _, m := range regexp.MustCompile(`SQUIB-API-REQUEST (\S+ \S+) `).FindAllStringSubmatch(results[0].Output, -1) {
		got = append(got, m[1])
	}
	want := "PUT /logger, PUT /metrics, PUT /machine-config, GET /machine-config, PUT /boot-source, PUT /drives/rootfs, PUT /network-interfaces/1, PUT /vsock, PUT /actions"
	if strings.Join(got, ", ") != want {
		t.Errorf("lifecycle: requests sent: %s\nwant %s", strings.Join(got, ", "), want)
	}
}

// BenchmarkAPILab measures, in the lab, the latency of PATCH /vm (Paused
// and Resumed in turn, each a real pause or resume of the guest's vCPUs)
// and of GET /, to a running 2-vCPU guest while 16 clients send GET / in a
// loop. Everything is emulated (TCG, with KVM inside): compare these with
// each other, not with native figures.
//
//	go test -run '^$' -bench APILab -benchtime 1x ./e2e/
func BenchmarkAPILab(b *testing.B) {
	lab.Require(b)
	scenario := buildForL1(b, "./apiscenario")
	const requests = 200
	re := regexp.MustCompile(`SQUIB-API-BENCH n=\d+ load=\d+ patch_vm_p50_us=(\d+) patch_vm_p99_us=(\d+) get_p50_us=(\d+) get_p99_us=(\d+)`)
	b.ResetTimer()
	for range b.N {
		res := lab.Run(b, lab.Options{
			Files:    map[string]string{"/apiscenario": scenario},
			Commands: []lab.Command{{Name: "bench", Args: []string{"/apiscenario", "bench", strconv.Itoa(requests)}}},
			Timeout:  8 * time.Minute,
		})[0]
		m := re.FindStringSubmatch(res.Output)
		if res.ExitCode != 0 || m == nil {
			b.Fatalf("exit status %d\n%s", res.ExitCode, res.Output)
		}
		v := make([]float64, 4)
		for i := range v {
			v[i], _ = strconv.ParseFloat(m[i+1], 64)
		}
		b.ReportMetric(v[0], "patch-vm-p50-µs")
		b.ReportMetric(v[1], "patch-vm-p99-µs")
		b.ReportMetric(v[2], "get-p50-µs")
		b.ReportMetric(v[3], "get-p99-µs")
		b.Logf("emulated lab, %d requests each under a load of 16 GET / clients: "+
			"PATCH /vm p50 %.0f µs, p99 %.0f µs; GET / p50 %.0f µs, p99 %.0f µs", requests, v[0], v[1], v[2], v[3])
	}
}
