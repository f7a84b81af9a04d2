package api

import "encoding/json"

// The JSON bodies of the API, with Firecracker's field names. Optional
// fields are pointers so that "absent" and "null" can be told from a value,
// as Firecracker's Option fields do.

// InstanceInfo is the body of GET /.
type InstanceInfo struct {
	ID         string `json:"id"`
	State      string `json:"state"` // StateNotStarted, StateRunning or StatePaused
	VMMVersion string `json:"vmm_version"`
	AppName    string `json:"app_name"`
}

// The states GET / reports.
const (
	StateNotStarted = "Not started"
	StateRunning    = "Running"
	StatePaused     = "Paused"
)

// Version is the body of GET /version; the key is Firecracker's.
type Version struct {
	FirecrackerVersion string `json:"firecracker_version"`
}

// MachineConfig is the body of GET and PUT /machine-config. In PUT,
// vcpu_count and mem_size_mib are required and omitted optional fields
// reset to their defaults.
type MachineConfig struct {
	VCPUCount       *int    `json:"vcpu_count"`
	MemSizeMiB      *uint64 `json:"mem_size_mib"`
	SMT             *bool   `json:"smt,omitempty"`
	TrackDirtyPages *bool   `json:"track_dirty_pages,omitempty"`
	// HugePages and CPUTemplate are accepted with their "None" values only.
	HugePages   *string `json:"huge_pages,omitempty"`
	CPUTemplate *string `json:"cpu_template,omitempty"`
}

// BootSource is the body of PUT /boot-source.
type BootSource struct {
	KernelImagePath *string `json:"kernel_image_path"`
	InitrdPath      *string `json:"initrd_path"`
	BootArgs        *string `json:"boot_args"`
}

// Action is the body of PUT /actions.
type Action struct {
	ActionType *string `json:"action_type"`
}

// The action types of PUT /actions.
const (
	ActionInstanceStart  = "InstanceStart"
	ActionFlushMetrics   = "FlushMetrics"
	ActionSendCtrlAltDel = "SendCtrlAltDel"
)

// VM is the body of PATCH /vm.
type VM struct {
	State *string `json:"state"`
}

// The states PATCH /vm accepts.
const (
	VMPaused  = "Paused"
	VMResumed = "Resumed"
)

// Logger is the body of PUT /logger. Level is one of Error, Warning (or
// Warn), Info, Debug, Trace and Off, in any case; Info when absent.
type Logger struct {
	LogPath       *string `json:"log_path,omitempty"`
	Level         *string `json:"level,omitempty"`
	ShowLevel     *bool   `json:"show_level,omitempty"`
	ShowLogOrigin *bool   `json:"show_log_origin,omitempty"`
	Module        *string `json:"module,omitempty"`
}

// Metrics is the body of PUT /metrics.
type Metrics struct {
	MetricsPath *string `json:"metrics_path"`
}

// SnapshotCreate is the body of PUT /snapshot/create.
type SnapshotCreate struct {
	SnapshotPath *string `json:"snapshot_path"`
	MemFilePath  *string `json:"mem_file_path"`
	SnapshotType *string `json:"snapshot_type,omitempty"` // Full (default) or Diff
}

// SnapshotLoad is the body of PUT /snapshot/load. Exactly one of MemBackend
// and the deprecated MemFilePath must be given.
type SnapshotLoad struct {
	SnapshotPath        *string     `json:"snapshot_path"`
	MemBackend          *MemBackend `json:"mem_backend,omitempty"`
	MemFilePath         *string     `json:"mem_file_path,omitempty"`
	TrackDirtyPages     *bool       `json:"track_dirty_pages,omitempty"`
	EnableDiffSnapshots *bool       `json:"enable_diff_snapshots,omitempty"`
	ResumeVM            *bool       `json:"resume_vm,omitempty"`
	// squib's own fields. VCPUPower: "saved" (the default: each vCPU as
	// it was saved) or "boot_vcpu" (only vCPU 0 runs, secondaries are off;
	// refused when a secondary was saved online).
	// CopyMemory reads the memory file in instead of mapping it.
	VCPUPower  *string `json:"vcpu_power,omitempty"`
	CopyMemory *bool   `json:"copy_memory,omitempty"`
	// VsockOverride gives the restored vsock device another socket
	// (Firecracker 1.16): clones of one snapshot each need their own.
	VsockOverride *VsockOverride `json:"vsock_override,omitempty"`
	// NetworkOverrides give restored interfaces other backends of their
	// kind (Firecracker's host_dev_name; squib's unixgram_path, publish).
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
}

// VsockOverride is the vsock_override of PUT /snapshot/load; uds_path is
// required.
type VsockOverride struct {
	UDSPath *string `json:"uds_path"`
}

// MemBackend says where a snapshot's guest memory comes from.
type MemBackend struct {
	BackendType *string `json:"backend_type"` // File or Uffd
	BackendPath *string `json:"backend_path"`
}

// Entropy is the body of PUT /entropy: the microVM gets a virtio-rng
// device. squibd does not rate-limit it, so a rate limiter is accepted
// only as one that does not limit (no buckets, or buckets of size or
// refill_time 0, which Firecracker leaves disabled).
type Entropy struct {
	RateLimiter *RateLimiter `json:"rate_limiter"`
}

// RateLimiter is Firecracker's rate limiter: a bandwidth (bytes) and an
// ops token bucket.
type RateLimiter struct {
	Bandwidth *TokenBucket `json:"bandwidth"`
	Ops       *TokenBucket `json:"ops"`
}

// TokenBucket is one bucket of a RateLimiter; size and refill_time are
// required.
type TokenBucket struct {
	Size         *uint64 `json:"size"`
	OneTimeBurst *uint64 `json:"one_time_burst"`
	RefillTime   *uint64 `json:"refill_time"` // milliseconds
}

// Drive is the body of PUT /drives/{drive_id}: drive_id (the path's),
// is_root_device and path_on_host are required. cache_type is Unsafe (the
// default: FLUSH is not offered) or Writeback (FLUSH is an fdatasync);
// io_engine Sync (the default) or Async, which squibd serves with the same
// engine. partuuid names the root device on the command line
// (root=PARTUUID=...). A vhost-user socket is refused, and a rate limiter
// is accepted only as one that does not limit.
type Drive struct {
	DriveID      *string      `json:"drive_id"`
	PathOnHost   *string      `json:"path_on_host,omitempty"`
	IsRootDevice *bool        `json:"is_root_device"`
	IsReadOnly   *bool        `json:"is_read_only,omitempty"`
	PartUUID     *string      `json:"partuuid,omitempty"`
	CacheType    *string      `json:"cache_type,omitempty"`
	IOEngine     *string      `json:"io_engine,omitempty"`
	RateLimiter  *RateLimiter `json:"rate_limiter,omitempty"`
	Socket       *string      `json:"socket,omitempty"`
}

// Vsock is the body of PUT /vsock: guest_cid and uds_path are required;
// vsock_id is deprecated, accepted and ignored, as on Firecracker. The
// guest's CID is 3 to 2^32-2 (0 to 2 and 2^32-1 are reserved).
type Vsock struct {
	VsockID  *string `json:"vsock_id,omitempty"`
	GuestCID *uint32 `json:"guest_cid"`
	UDSPath  *string `json:"uds_path"`
}

// PartialDrive is the body of PATCH /drives/{drive_id}, after the start:
// drive_id (the path's) is required; path_on_host gives the drive a new
// image (or the same one, resized). A rate limiter is accepted only as one
// that does not limit, as in Drive.
type PartialDrive struct {
	DriveID     *string      `json:"drive_id"`
	PathOnHost  *string      `json:"path_on_host,omitempty"`
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// FullConfig is the body of GET /vm/config and the schema of --config-file.
// The device sections but drives, vsock and entropy are placeholders until
// squib has the devices: in a config file they must be empty or null.
type FullConfig struct {
	BootSource    *BootSource    `json:"boot-source"`
	MachineConfig *MachineConfig `json:"machine-config"`
	Logger        *Logger        `json:"logger"`
	Metrics       *Metrics       `json:"metrics"`

	Drives            []Drive            `json:"drives"`
	NetworkInterfaces []NetworkInterface `json:"network-interfaces"`
	Pmem              []json.RawMessage  `json:"pmem"`
	Vsock             *Vsock             `json:"vsock"`
	Balloon           json.RawMessage    `json:"balloon"`
	MMDSConfig        json.RawMessage    `json:"mmds-config"`
	Entropy           *Entropy           `json:"entropy"`
	CPUConfig         json.RawMessage    `json:"cpu-config"`
	MemoryHotplug     json.RawMessage    `json:"memory-hotplug"`
}

// Fault is the body of every error response, and the error the Client
// returns for one.
type Fault struct {
	Message string `json:"fault_message"`
}

func (f *Fault) Error() string { return f.Message }
