package hvf

import (
	"errors"
	"fmt"

	"github.com/squibvm/squib/hv"
)

// Return is hv_return_t, a mach_error_t: err_local | err_sub(0xba5) | code,
// i.e. 0xfae94000 | code as a signed 32-bit int (arm64/hv/hv_kern_types.h).
type Return int32

const hvErrorBase = -0x516c000 // int32(0xfae94000)

const (
	HV_SUCCESS             Return = 0
	HV_ERROR               Return = hvErrorBase + 0x01
	HV_BUSY                Return = hvErrorBase + 0x02
	HV_BAD_ARGUMENT        Return = hvErrorBase + 0x03
	HV_ILLEGAL_GUEST_STATE Return = hvErrorBase + 0x04
	HV_NO_RESOURCES        Return = hvErrorBase + 0x05
	HV_NO_DEVICE           Return = hvErrorBase + 0x06
	HV_DENIED              Return = hvErrorBase + 0x07
	HV_EXISTS              Return = hvErrorBase + 0x08
	HV_UNSUPPORTED         Return = hvErrorBase + 0x0f
)

var returnNames = map[Return]struct{ name, meaning string }{
	HV_SUCCESS:             {"HV_SUCCESS", "success"},
	HV_ERROR:               {"HV_ERROR", "error"},
	HV_BUSY:                {"HV_BUSY", "busy"},
	HV_BAD_ARGUMENT:        {"HV_BAD_ARGUMENT", "bad argument"},
	HV_ILLEGAL_GUEST_STATE: {"HV_ILLEGAL_GUEST_STATE", "illegal guest state"},
	HV_NO_RESOURCES:        {"HV_NO_RESOURCES", "no resources"},
	HV_NO_DEVICE:           {"HV_NO_DEVICE", "no such VM or vCPU"},
	HV_DENIED:              {"HV_DENIED", "denied"},
	HV_EXISTS:              {"HV_EXISTS", "already exists"},
	HV_UNSUPPORTED:         {"HV_UNSUPPORTED", "unsupported"},
}

func (r Return) String() string {
	if n, ok := returnNames[r]; ok {
		return n.name
	}
	return fmt.Sprintf("hv_return_t(%#x)", uint32(r))
}

// Error is a failed Hypervisor.framework call. Compare with errors.Is against
// the Err* values, which match any function:
//
//	errors.Is(err, hvf.ErrBusy)
type Error struct {
	Func string // C function, e.g. "hv_vm_create"; empty in the Err* values
	Code Return
}

func (e *Error) Error() string {
	s := e.Code.String()
	if n, ok := returnNames[e.Code]; ok {
		s += " (" + n.meaning + ")"
	}
	if e.Func == "" {
		return s
	}
	return e.Func + ": " + s
}

// Is reports whether target is an *Error with the same code and either no
// function or the same one.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Func == "" || t.Func == e.Func)
}

// The hv_return_t error codes, for errors.Is.
var (
	ErrError             = &Error{Code: HV_ERROR}
	ErrBusy              = &Error{Code: HV_BUSY}
	ErrBadArgument       = &Error{Code: HV_BAD_ARGUMENT}
	ErrIllegalGuestState = &Error{Code: HV_ILLEGAL_GUEST_STATE}
	ErrNoResources       = &Error{Code: HV_NO_RESOURCES}
	ErrNoDevice          = &Error{Code: HV_NO_DEVICE}
	ErrDenied            = &Error{Code: HV_DENIED}
	ErrExists            = &Error{Code: HV_EXISTS}
	ErrUnsupported       = &Error{Code: HV_UNSUPPORTED}
)

// check turns the result of C function fn into an error.
func check(fn string, r Return) error {
	if r == HV_SUCCESS {
		return nil
	}
	return &Error{Func: fn, Code: r}
}

// firstError returns the first non-nil error, so that a group of calls that
// all run reports one line.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// ErrNotEntitled is wrapped by the error of a hypervisor call refused because
// the executable lacks the com.apple.security.hypervisor entitlement.
var ErrNotEntitled = errors.New("the executable lacks the com.apple.security.hypervisor entitlement")

// ErrMacOSTooOld is wrapped by Open's error when this macOS lacks what squib
// needs from Hypervisor.framework.
var ErrMacOSTooOld = errors.New("this macOS is too old")

// signHint is how to give an executable the hypervisor entitlement, with the
// entitlements.plist at the root of squib's source tree. --force replaces the
// entitlement-less ad-hoc signature Go's linker puts on darwin/arm64 binaries.
func signHint(exe string) string {
	return "codesign --force --sign - --entitlements entitlements.plist " + exe
}

// entitlementError explains err, the HV_DENIED or HV_UNSUPPORTED that
// Hypervisor.framework returns when the executable exe is not entitled to
// use it; other errors are returned as they are.
func entitlementError(err error, exe string) error {
	switch {
	case errors.Is(err, ErrDenied):
		return fmt.Errorf("%w: %w: %w; sign it with: %s", hv.ErrNoHypervisor, err, ErrNotEntitled, signHint(exe))
	case errors.Is(err, ErrUnsupported):
		return fmt.Errorf("%w: %w: %w (or this Mac cannot run VMs, e.g. because macOS itself runs in a VM); sign it with: %s",
			hv.ErrNoHypervisor, err, ErrNotEntitled, signHint(exe))
	}
	return err
}
