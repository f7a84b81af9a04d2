package snapshot

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/psci"
)

// Arch is the only architecture this format describes.
const Arch = "arm64"

// Type says whether a snapshot's memory file is complete or holds only the
// blocks written since its parent.
type Type uint8

// Snapshot types. The zero value is invalid, so a missing field is caught.
const (
	Full Type = 1 // the memory file is the whole guest RAM
	Diff Type = 2 // the memory file holds the blocks dirtied since the parent snapshot
)

func (t Type) String() string {
	switch t {
	case Full:
		return "Full"
	case Diff:
		return "Diff"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// MarshalText spells the type as Firecracker's snapshot_type does, for JSON.
func (t Type) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// State is the content of a state file: everything needed to restore a VM
// except guest RAM, which lives in the memory file Header.Memory names.
type State struct {
	Header  Header  `cbor:"1,keyasint"`
	Machine Machine `cbor:"2,keyasint"`
}

// Header identifies a snapshot and the host it can be restored on. The format
// version is not here: it sits in the file's fixed prefix, ahead of the CBOR.
type Header struct {
	Arch           string    `cbor:"1,keyasint" json:"arch"`            // Arch
	Backend        string    `cbor:"2,keyasint" json:"backend"`         // gic.BackendKVM or gic.BackendHVF
	BackendVersion string    `cbor:"3,keyasint" json:"backend_version"` // host kernel or macOS version, for diagnostics
	HostPageSize   uint32    `cbor:"4,keyasint" json:"host_page_size"`  // bytes
	RAMBase        uint64    `cbor:"5,keyasint" json:"ram_base"`        // guest physical address of RAM
	RAMSize        uint64    `cbor:"6,keyasint" json:"ram_size"`        // bytes
	ID             string    `cbor:"7,keyasint" json:"id"`              // NewID; names the guest moment captured
	Parent         string    `cbor:"8,keyasint" json:"parent"`          // Diff: ID of the snapshot the memory diff applies to
	Type           Type      `cbor:"9,keyasint" json:"type"`
	Created        time.Time `cbor:"10,keyasint" json:"created"` // UTC
	Memory         MemoryRef `cbor:"11,keyasint" json:"memory"`
}

// MemoryRef binds a state file to one memory file: a state file paired with
// any other memory file is refused.
type MemoryRef struct {
	FileID    string `cbor:"1,keyasint" json:"file_id"`    // random ID written in the memory file's footer
	Size      uint64 `cbor:"2,keyasint" json:"size"`       // guest RAM bytes the file holds
	BlockSize uint32 `cbor:"3,keyasint" json:"block_size"` // sparse and dirty-tracking granularity
}

// Machine is the saved VM: configuration, vCPUs, interrupt controller and
// devices.
type Machine struct {
	Config Config `cbor:"1,keyasint"`
	// VCPUs holds one entry per vCPU; the index is the vCPU index.
	VCPUs []VCPU    `cbor:"2,keyasint"`
	GIC   gic.State `cbor:"3,keyasint"`
	// Devices maps a device name ("pl011", "pl031", ...) to the state its
	// package saved, encoded with Marshal. Each package owns its state type.
	Devices map[string]cbor.RawMessage `cbor:"4,keyasint,omitempty"`
}

// Config is the VM configuration a restore starts from. The fields the
// format checks are typed; the rest of the VMM's configuration (boot source,
// drives, network) travels opaque in Extra.
type Config struct {
	VCPUs     int             `cbor:"1,keyasint" json:"vcpus"`
	MemoryMiB uint64          `cbor:"2,keyasint" json:"memory_mib"`
	Cmdline   string          `cbor:"3,keyasint" json:"cmdline"`
	Extra     cbor.RawMessage `cbor:"4,keyasint,omitempty" json:"-"` // VMM-defined, encoded with Marshal
}

// VCPU is one vCPU's architectural state, in backend-neutral form (register
// names as in the Arm ARM).
type VCPU struct {
	X        [31]uint64    `cbor:"1,keyasint"` // X0..X30
	SP_EL0   uint64        `cbor:"2,keyasint"`
	SP_EL1   uint64        `cbor:"3,keyasint"`
	PC       uint64        `cbor:"4,keyasint"`
	PSTATE   uint64        `cbor:"5,keyasint"` // in SPSR format
	ELR_EL1  uint64        `cbor:"6,keyasint"`
	SPSR_EL1 uint64        `cbor:"7,keyasint"`
	V        [32][2]uint64 `cbor:"8,keyasint"` // V0..V31 as {low, high} 64-bit halves
	FPCR     uint64        `cbor:"9,keyasint"`
	FPSR     uint64        `cbor:"10,keyasint"`
	// Sys holds the other system registers, keyed by SysReg encoding. A
	// register the backend could not read is absent and keeps its reset
	// value on restore. Registers with a field above are not repeated here.
	Sys   map[uint16]uint64 `cbor:"11,keyasint,omitempty"`
	MPIDR uint64            `cbor:"12,keyasint"` // MPIDR_EL1
	Power psci.Power        `cbor:"13,keyasint"`
	Timer Timer             `cbor:"14,keyasint"`
	// Backend holds backend-specific registers, opaque to this package and
	// encoded with Marshal; only the backend named in the header reads it.
	Backend cbor.RawMessage `cbor:"15,keyasint,omitempty"`
}

// Timer is the vCPU's EL1 virtual timer. Counter is the guest's virtual count
// (CNTVCT_EL0) when the vCPU stopped; a restore sets the counter offset so the
// count continues from it, neither jumping back nor leaping by the downtime.
type Timer struct {
	CTL     uint64 `cbor:"1,keyasint"` // CNTV_CTL_EL0
	CVAL    uint64 `cbor:"2,keyasint"` // CNTV_CVAL_EL0
	Counter uint64 `cbor:"3,keyasint"` // CNTVCT_EL0
}

// SysReg packs a system register's encoding as op0:op1:CRn:CRm:op2 in bits
// 15:14, 13:11, 10:7, 6:3 and 2:0, the packing both KVM (the low 16 bits of
// KVM_REG_ARM64_SYSREG ids) and Hypervisor.framework (hv_sys_reg_t) use.
func SysReg(op0, op1, crn, crm, op2 uint8) uint16 {
	return uint16(op0&3)<<14 | uint16(op1&7)<<11 | uint16(crn&15)<<7 | uint16(crm&15)<<3 | uint16(op2&7)
}

// SysRegName spells an encoding in the generic assembler form S<op0>_<op1>_C<n>_C<m>_<op2>.
func SysRegName(enc uint16) string {
	return fmt.Sprintf("S%d_%d_C%d_C%d_%d", enc>>14, enc>>11&7, enc>>7&15, enc>>3&15, enc&7)
}

// Encodings of the registers VCPU has a field for; Sys must not hold them.
var dedicatedSysRegs = map[uint16]string{
	SysReg(3, 0, 4, 1, 0):  "SP_EL0",
	SysReg(3, 4, 4, 1, 0):  "SP_EL1",
	SysReg(3, 0, 4, 0, 1):  "ELR_EL1",
	SysReg(3, 0, 4, 0, 0):  "SPSR_EL1",
	SysReg(3, 3, 4, 4, 0):  "FPCR",
	SysReg(3, 3, 4, 4, 1):  "FPSR",
	SysReg(3, 0, 0, 0, 5):  "MPIDR_EL1",
	SysReg(3, 3, 14, 3, 1): "CNTV_CTL_EL0",
	SysReg(3, 3, 14, 3, 2): "CNTV_CVAL_EL0",
	SysReg(3, 3, 14, 0, 2): "CNTVCT_EL0",
}

// idLen is the length of an ID in hex digits (128 bits).
const idLen = 32

// NewID returns a random 128-bit ID in lowercase hex, for snapshots and
// memory files.
func NewID() string {
	var b [idLen / 2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b[:])
}

// validID reports whether id is an ID as NewID writes it.
func validID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for _, c := range []byte(id) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
