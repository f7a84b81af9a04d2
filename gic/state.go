package gic

import (
	"errors"
	"fmt"
)

// Backend names recorded in State.Backend.
const (
	BackendKVM = "kvm"
	BackendHVF = "hvf"
)

// State is the GIC part of a snapshot. Its content is opaque outside the
// backend that wrote it: only the same backend, with the same number of
// vCPUs, can restore it.
type State struct {
	Backend        string    `cbor:"1,keyasint"` // BackendKVM or BackendHVF
	BackendVersion string    `cbor:"2,keyasint"` // host version that wrote Blob, for diagnostics
	Blob           []byte    `cbor:"3,keyasint"` // distributor and redistributor state, backend-defined
	ICC            []ICCRegs `cbor:"4,keyasint"` // CPU-interface registers; index = vCPU
}

// ErrIncompatibleState is wrapped by the errors of State.Check.
var ErrIncompatibleState = errors.New("incompatible GIC state")

// Check returns an error unless backend can restore s into a VM with vcpus
// vCPUs. The error wraps ErrIncompatibleState.
func (s *State) Check(backend string, vcpus int) error {
	switch {
	case s == nil:
		return fmt.Errorf("gic: %w: no GIC state in the snapshot", ErrIncompatibleState)
	case s.Backend != backend:
		return fmt.Errorf("gic: %w: saved by the %q backend, cannot be restored by %q",
			ErrIncompatibleState, s.Backend, backend)
	case len(s.ICC) != vcpus:
		return fmt.Errorf("gic: %w: saved with %d vCPUs, VM has %d",
			ErrIncompatibleState, len(s.ICC), vcpus)
	}
	return nil
}
