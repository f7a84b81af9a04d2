package api

import (
	"errors"
	"fmt"

	"github.com/squibvm/squib/psci"
)

// route is one endpoint: a ServeMux pattern, the resource's name in
// Firecracker's metrics, and the function that turns a body into a
// Controller call. handle returns the GET response, or nil for 204.
type route struct {
	pattern string
	metric  string
	handle  func(c *Controller, body []byte) (any, error)
}

// routes is the API. A device adds its endpoints here, replacing the
// notYet entries below.
var routes = []route{
	{"GET /{$}", "instance_info", get((*Controller).info)},
	{"GET /version", "vmm_version", get((*Controller).version)},
	{"GET /vm/config", "vm_config", get((*Controller).fullConfig)},
	{"GET /machine-config", "machine_cfg", get((*Controller).machineConfig)},
	{"PUT /machine-config", "machine_cfg", withBody(true, (*Controller).putMachineConfig)},
	{"PATCH /machine-config", "machine_cfg", withBody(true, (*Controller).patchMachineConfig)},
	{"PUT /boot-source", "boot_source", withBody(true, (*Controller).setBootSource)},
	{"PUT /actions", "actions", withBody(true, (*Controller).action)},
	{"PATCH /vm", "vm", withBody(true, (*Controller).setState)},
	{"PUT /logger", "logger", withBody(true, (*Controller).setLogger)},
	// Firecracker ignores unknown fields in this one body.
	{"PUT /metrics", "metrics", withBody(false, (*Controller).setMetrics)},
	{"PUT /snapshot/create", "snapshot_create", withBody(true, (*Controller).snapshotCreate)},
	{"PUT /snapshot/load", "snapshot_load", withBody(true, (*Controller).snapshotLoad)},
	{"PUT /entropy", "entropy", withBody(true, (*Controller).setEntropy)},

	{"PUT /drives/{id}", "drive", notYet("block devices")},
	{"PATCH /drives/{id}", "drive", notYet("block devices")},
	{"PUT /network-interfaces/{id}", "network", notYet("network interfaces")},
	{"PATCH /network-interfaces/{id}", "network", notYet("network interfaces")},
	{"PUT /vsock", "vsock", notYet("vsock")},
	{"GET /mmds", "mmds", notYet("MMDS")},
	{"PUT /mmds", "mmds", notYet("MMDS")},
	{"PATCH /mmds", "mmds", notYet("MMDS")},
	{"PUT /mmds/config", "mmds", notYet("MMDS")},
}

// get adapts a GET answer to a route.
func get[T any](answer func(*Controller) T) func(*Controller, []byte) (any, error) {
	return func(c *Controller, _ []byte) (any, error) { return answer(c), nil }
}

// withBody adapts a request with a JSON body of type T to a route; strict
// refuses unknown fields.
func withBody[T any](strict bool, do func(*Controller, T) error) func(*Controller, []byte) (any, error) {
	return func(c *Controller, body []byte) (any, error) {
		var v T
		if err := decode(body, &v, strict); err != nil {
			return nil, err
		}
		return nil, do(c, v)
	}
}

func notYet(what string) func(*Controller, []byte) (any, error) {
	return func(*Controller, []byte) (any, error) {
		return nil, fmt.Errorf("squibd does not support %s yet", what)
	}
}

// check validates an entropy body as Firecracker parses it, and refuses a
// rate limiter that would limit.
func (e Entropy) check() error {
	if e.RateLimiter == nil {
		return nil
	}
	for _, b := range []*TokenBucket{e.RateLimiter.Bandwidth, e.RateLimiter.Ops} {
		if b == nil {
			continue
		}
		if err := required(field{"size", b.Size != nil}, field{"refill_time", b.RefillTime != nil}); err != nil {
			return err
		}
		if *b.Size != 0 && *b.RefillTime != 0 {
			return errors.New("Entropy device error: squibd does not rate-limit the entropy device: " +
				"leave rate_limiter out (or give it no bucket of non-zero size and refill_time)")
		}
	}
	return nil
}

// check validates a snapshot create body as Firecracker parses it.
func (s SnapshotCreate) check() error {
	if err := required(field{"snapshot_path", s.SnapshotPath != nil}, field{"mem_file_path", s.MemFilePath != nil}); err != nil {
		return err
	}
	if t := s.SnapshotType; t != nil && *t != "Full" && *t != "Diff" {
		return bodyError("unknown variant `%s`, expected `Full` or `Diff`", *t)
	}
	return nil
}

// check validates a snapshot load body as Firecracker parses it.
func (s SnapshotLoad) check() error {
	if err := required(field{"snapshot_path", s.SnapshotPath != nil}); err != nil {
		return err
	}
	switch {
	case s.MemBackend != nil && s.MemFilePath != nil:
		return bodyError("too many fields: either `mem_backend` or `mem_file_path` exclusively is required")
	case s.MemBackend == nil && s.MemFilePath == nil:
		return bodyError("missing field: either `mem_backend` or `mem_file_path` is required")
	case s.MemBackend != nil:
		b := s.MemBackend
		if err := required(field{"backend_path", b.BackendPath != nil}, field{"backend_type", b.BackendType != nil}); err != nil {
			return err
		}
		if *b.BackendType != "File" && *b.BackendType != "Uffd" {
			return bodyError("unknown variant `%s`, expected `File` or `Uffd`", *b.BackendType)
		}
	}
	if _, err := s.power(); err != nil {
		return err
	}
	return nil
}

// power is the restore policy vcpu_power names.
func (s SnapshotLoad) power() (psci.RestorePolicy, error) {
	if s.VCPUPower == nil {
		return psci.RestoreSaved, nil
	}
	switch *s.VCPUPower {
	case "boot_vcpu":
		return psci.RestoreBSPOnly, nil
	case "saved":
		return psci.RestoreSaved, nil
	}
	return 0, bodyError("unknown variant `%s`, expected `boot_vcpu` or `saved`", *s.VCPUPower)
}
