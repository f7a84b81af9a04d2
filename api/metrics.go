package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/squibvm/squib/vmm"
)

// metricsPeriod is how often a running microVM's metrics are written,
// Firecracker's period.
const metricsPeriod = 60 * time.Second

// metrics gathers what the metrics lines report. Like Firecracker's,
// counters count since the previous line and latencies are the last seen.
//
// A line looks like:
//
//	{"api_server":{...},"get_api_requests":{"instance_info_count":3,...},
//	 "put_api_requests":{"actions_count":1,"actions_fails":0,...},"patch_api_requests":{...},
//	 "api_latencies_us":{"put_actions":{"count":1,"min_us":90,"max_us":90,"sum_us":90},...},
//	 "latencies_us":{"vmm_pause_vm":120,"vmm_resume_vm":80},
//	 "vcpu":{"exit_mmio_read":10,"exit_mmio_write":200,...},
//	 "logger":{"missed_log_count":0,"log_fails":0,"missed_metrics_count":0,"metrics_fails":0},"utc_timestamp_ms":...}
//
// The "logger" group counts, as Firecracker's does, the log lines and
// metrics lines that were not written because their file would have made
// squibd wait (a FIFO nobody reads) or failed (*_fails): see sink.
type metrics struct {
	// logDrops and metricsDrops count lost lines; the sinks add to them
	// without taking mu.
	logDrops, metricsDrops drops

	mu        sync.Mutex
	out       *sink // nil until PUT /metrics
	requests  map[string]map[string]uint64
	latencies map[string]*latency
	stored    map[string]map[string]uint64 // latest values in µs, by group
	counted   []route                      // the routes whose requests are counted
	exits     vmm.ExitCounts               // as of the previous line
}

// latency aggregates request latencies in µs, as Firecracker's
// LatencyAggregateMetrics do, plus a count to take a mean from.
type latency struct {
	Count uint64 `json:"count"`
	Min   uint64 `json:"min_us"`
	Max   uint64 `json:"max_us"`
	Sum   uint64 `json:"sum_us"`
}

func newMetrics(counted []route) *metrics {
	m := &metrics{stored: map[string]map[string]uint64{"api_server": {}, "latencies_us": {}}, counted: counted}
	m.reset()
	return m
}

// reset zeroes the counters; every counted route's are in every line.
func (m *metrics) reset() {
	m.requests = map[string]map[string]uint64{}
	for _, rt := range m.counted {
		method, _, _ := strings.Cut(rt.pattern, " ")
		group := requestGroup(method)
		if m.requests[group] == nil {
			m.requests[group] = map[string]uint64{}
		}
		m.requests[group][rt.metric+"_count"] = 0
		m.requests[group][rt.metric+"_fails"] = 0
	}
	m.latencies = map[string]*latency{}
}

// requestGroup names the counters of requests with method, as Firecracker
// does: get_api_requests, put_api_requests, patch_api_requests.
func requestGroup(method string) string {
	return strings.ToLower(method) + "_api_requests"
}

var errMetricsAgain = errors.New("Metrics error: Reinitialization of metrics not allowed.")

// open starts the metrics at path; like Firecracker, only once. The caller
// holds no lock that a request needs: opening a file may take its time.
func (m *metrics) open(path string) error {
	if m.configured() {
		return errMetricsAgain
	}
	s, err := openSink(path, &m.metricsDrops)
	if err != nil {
		return fmt.Errorf("Metrics error: Cannot initialize the metrics system due to bad user input: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.out != nil { // another PUT /metrics came first
		s.Close()
		return errMetricsAgain
	}
	m.out = s
	return nil
}

// configured reports that the metrics have a file.
func (m *metrics) configured() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.out != nil
}

// request counts one API request to resource name (Firecracker's metric
// name, such as "machine_cfg") with the given HTTP method.
func (m *metrics) request(method, name string, ok bool, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	group := requestGroup(method)
	m.requests[group][name+"_count"]++
	if !ok {
		m.requests[group][name+"_fails"]++
	}
	key := strings.ToLower(method) + "_" + name
	l := m.latencies[key]
	if l == nil {
		l = &latency{Min: ^uint64(0)}
		m.latencies[key] = l
	}
	us := uint64(d.Microseconds())
	l.Count++
	l.Sum += us
	l.Min = min(l.Min, us)
	l.Max = max(l.Max, us)
}

// store records the latest value of a duration: group is "latencies_us"
// (vmm_pause_vm, vmm_resume_vm) or "api_server" (process start-up times).
func (m *metrics) store(group, name string, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stored[group][name] = uint64(d.Microseconds())
}

// write writes one line, if metrics were configured, given the vCPU exit
// counts so far.
func (m *metrics) write(exits vmm.ExitCounts) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.out == nil {
		return nil
	}
	prev := m.exits
	line := map[string]any{
		"utc_timestamp_ms": time.Now().UnixMilli(),
		"api_latencies_us": m.latencies,
		"vcpu": map[string]uint64{
			"exit_mmio_read":  exits.MMIORead - prev.MMIORead,
			"exit_mmio_write": exits.MMIOWrite - prev.MMIOWrite,
			"exit_hypercall":  exits.Hypercall - prev.Hypercall,
			"exit_wfi":        exits.WFI - prev.WFI,
			"exit_kicked":     exits.Kicked - prev.Kicked,
			"exit_other":      exits.Other - prev.Other,
		},
	}
	for group, values := range m.stored {
		line[group] = values
	}
	for group, counts := range m.requests {
		line[group] = counts
	}
	logger := map[string]uint64{
		"missed_log_count":     m.logDrops.missed.Load(),
		"log_fails":            m.logDrops.fails.Load(),
		"missed_metrics_count": m.metricsDrops.missed.Load(),
		"metrics_fails":        m.metricsDrops.fails.Load(),
	}
	line["logger"] = logger
	b, err := json.Marshal(line)
	if err != nil {
		return err
	}
	if _, err := m.out.Write(append(b, '\n')); err != nil {
		// Nothing is reset: the next line has these counts too.
		return fmt.Errorf("writing metrics: %w", err)
	}
	m.exits = exits
	m.reset()
	// Like the other counters, these count since the previous line.
	m.logDrops.sub(logger["missed_log_count"], logger["log_fails"])
	m.metricsDrops.sub(logger["missed_metrics_count"], logger["metrics_fails"])
	return nil
}

func (m *metrics) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.out != nil {
		m.out.Close()
	}
}
