package api

import (
	"errors"
	"fmt"
	"strings"

	"github.com/squibvm/squib/devices/vsock"
	"github.com/squibvm/squib/psci"
)

// route is one endpoint: a ServeMux pattern, the resource's name in
// Firecracker's metrics, and the function that turns a body into a
// Controller call. handle is given the path's {id} ("" if it has none)
// and returns the GET response, or nil for 204.
type route struct {
	pattern string
	metric  string
	handle  func(c *Controller, id string, body []byte) (any, error)
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
	{"PUT /vsock", "vsock", withBody(true, (*Controller).setVsock)},

	{"PUT /drives/{id}", "drive", withID(true, (*Controller).setDrive)},
	{"PATCH /drives/{id}", "drive", withID(true, (*Controller).patchDrive)},
	{"PUT /network-interfaces/{id}", "network", withID(true, (*Controller).setNet)},
	{"PATCH /network-interfaces/{id}", "network", withID(true, (*Controller).patchNet)},
	{"GET /mmds", "mmds", notYet("MMDS")},
	{"PUT /mmds", "mmds", notYet("MMDS")},
	{"PATCH /mmds", "mmds", notYet("MMDS")},
	{"PUT /mmds/config", "mmds", notYet("MMDS")},
}

// get adapts a GET answer to a route.
func get[T any](answer func(*Controller) T) func(*Controller, string, []byte) (any, error) {
	return func(c *Controller, _ string, _ []byte) (any, error) { return answer(c), nil }
}

// withBody adapts a request with a JSON body of type T to a route; strict
// refuses unknown fields.
func withBody[T any](strict bool, do func(*Controller, T) error) func(*Controller, string, []byte) (any, error) {
	return withID(strict, func(c *Controller, _ string, v T) error { return do(c, v) })
}

// withID is withBody for a request whose path names a resource: do is
// given the path's id too.
func withID[T any](strict bool, do func(*Controller, string, T) error) func(*Controller, string, []byte) (any, error) {
	return func(c *Controller, id string, body []byte) (any, error) {
		var v T
		if err := decode(body, &v, strict); err != nil {
			return nil, err
		}
		return nil, do(c, id, v)
	}
}

func notYet(what string) func(*Controller, string, []byte) (any, error) {
	return func(*Controller, string, []byte) (any, error) {
		return nil, fmt.Errorf("squibd does not support %s yet", what)
	}
}

// check validates an entropy body as Firecracker parses it, and refuses a
// rate limiter that would limit.
func (e Entropy) check() error {
	return e.RateLimiter.check("Entropy device error", "the entropy device")
}

// check validates a rate limiter as Firecracker parses it, and refuses one
// that would limit, with the error's prefix and the device's name.
func (r *RateLimiter) check(prefix, device string) error {
	if r == nil {
		return nil
	}
	for _, b := range []*TokenBucket{r.Bandwidth, r.Ops} {
		if b == nil {
			continue
		}
		if err := required(field{"size", b.Size != nil}, field{"refill_time", b.RefillTime != nil}); err != nil {
			return err
		}
		if *b.Size != 0 && *b.RefillTime != 0 {
			return fmt.Errorf("%s: squibd does not rate-limit %s: "+
				"leave rate_limiter out (or give it no bucket of non-zero size and refill_time)", prefix, device)
		}
	}
	return nil
}

// check validates a vsock body as Firecracker parses it (guest_cid a u32),
// and refuses the reserved CIDs.
func (v Vsock) check() error {
	if err := required(field{"guest_cid", v.GuestCID != nil}, field{"uds_path", v.UDSPath != nil}); err != nil {
		return err
	}
	if err := vsock.CheckCID(uint64(*v.GuestCID)); err != nil {
		return fmt.Errorf("Vsock config error: %w", err)
	}
	return nil
}

// driveID is Firecracker's rule for resource ids, for a drive.
func driveID(id string) error { return resourceID("Drive config error", "drive", id) }

// resourceID is Firecracker's rule for resource ids: 1 to 64 ASCII
// letters, digits and underscores.
func resourceID(prefix, kind, id string) error {
	if id == "" || len(id) > 64 || strings.ContainsFunc(id, func(r rune) bool {
		return !(r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		return fmt.Errorf("%s: invalid %s id %q: 1 to 64 ASCII letters, digits and underscores", prefix, kind, id)
	}
	return nil
}

// check validates a drive body for the drive the path names, as
// Firecracker parses it, and refuses what squibd does not serve
// (vhost-user drives, a rate limiter that would limit).
func (d Drive) check(id string) error {
	if err := required(field{"drive_id", d.DriveID != nil}, field{"is_root_device", d.IsRootDevice != nil}); err != nil {
		return err
	}
	if *d.DriveID != id {
		return errors.New("The id from the path does not match the id from the body!")
	}
	if err := driveID(id); err != nil {
		return err
	}
	if d.Socket != nil {
		return errors.New("Drive config error: squibd does not support vhost-user drives (socket)")
	}
	if d.PathOnHost == nil {
		return errors.New("Drive config error: path_on_host is required")
	}
	if t := d.CacheType; t != nil && *t != "Unsafe" && *t != "Writeback" {
		return bodyError("unknown variant `%s`, expected `Unsafe` or `Writeback`", *t)
	}
	if e := d.IOEngine; e != nil && *e != "Sync" && *e != "Async" {
		return bodyError("unknown variant `%s`, expected `Sync` or `Async`", *e)
	}
	return d.RateLimiter.check("Drive config error", "drives")
}

// check validates a drive patch body for the drive the path names, as
// Firecracker parses it, and refuses a rate limiter that would limit.
func (p PartialDrive) check(id string) error {
	if err := required(field{"drive_id", p.DriveID != nil}); err != nil {
		return err
	}
	if *p.DriveID != id {
		return errors.New("The id from the path does not match the id from the body!")
	}
	if err := driveID(id); err != nil {
		return err
	}
	return p.RateLimiter.check("Drive config error", "drives")
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
	if o := s.VsockOverride; o != nil {
		return required(field{"uds_path", o.UDSPath != nil})
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
