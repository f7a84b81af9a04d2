package main

import (
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkStartup measures squibd from exec to an API socket that accepts
// connections: wall time as the parent sees it, and the CPU time squibd
// reports it had used by then (Firecracker's bar: 8 CPU-ms).
//
//	go test -run '^$' -bench Startup ./cmd/squibd/
func BenchmarkStartup(b *testing.B) {
	cpuRE := regexp.MustCompile(`startup_cpu_us=(\d+)`)
	var walls, cpus []time.Duration
	for range b.N {
		sock := filepath.Join(b.TempDir(), "api.sock")
		var stderr syncBuffer
		cmd := exec.Command(squibdBin, "--api-sock", sock, "--level", "Info")
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		for {
			if c, err := net.Dial("unix", sock); err == nil {
				c.Close()
				break
			}
			time.Sleep(50 * time.Microsecond)
			if time.Since(start) > 10*time.Second {
				b.Fatalf("no socket: %s", stderr.String())
			}
		}
		walls = append(walls, time.Since(start))
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		m := cpuRE.FindStringSubmatch(stderr.String())
		if m == nil {
			b.Fatalf("no start-up CPU time in %q", stderr.String())
		}
		us, _ := strconv.Atoi(m[1])
		cpus = append(cpus, time.Duration(us)*time.Microsecond)
	}
	b.ReportMetric(ms(median(walls)), "wall-ms")
	b.ReportMetric(ms(median(cpus)), "cpu-ms")
	b.ReportMetric(ms(slices.Max(cpus)), "max-cpu-ms")
}

// BenchmarkAPILatency measures GET / under load: 16 clients send GET / in
// a loop while the benchmark's requests are timed. The microVM is not
// started (this machine has no hypervisor); every request still takes the
// controller's lock, as on a running microVM. PATCH /vm, which pauses and
// resumes real vCPUs, is measured in the lab: BenchmarkAPILab in e2e.
//
//	go test -run '^$' -bench APILatency ./cmd/squibd/
func BenchmarkAPILatency(b *testing.B) {
	d := startDaemon(b, squibdBin)
	stop := make(chan struct{})
	var load sync.WaitGroup
	for range 16 {
		load.Add(1)
		go func() {
			defer load.Done()
			for {
				select {
				case <-stop:
					return
				default:
					d.do("GET", "/", "")
				}
			}
		}()
	}
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		t := time.Now()
		status, resp, err := d.do("GET", "/", "")
		lat[i] = time.Since(t)
		if err != nil || status != 200 {
			b.Fatalf("GET /: %d %q %v", status, resp, err)
		}
	}
	b.StopTimer()
	close(stop)
	load.Wait()
	slices.Sort(lat)
	b.ReportMetric(us(lat[len(lat)/2]), "p50-µs")
	b.ReportMetric(us(lat[len(lat)*99/100]), "p99-µs")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
