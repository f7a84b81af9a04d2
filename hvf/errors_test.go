package hvf

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/squibvm/squib/hv"
)

// hv_return_t values from arm64/hv/hv_kern_types.h (hvf.md §3.1).
func TestReturnValues(t *testing.T) {
	for _, c := range []struct {
		r    Return
		hex  uint32
		name string
	}{
		{HV_SUCCESS, 0, "HV_SUCCESS"},
		{HV_ERROR, 0xfae94001, "HV_ERROR"},
		{HV_BUSY, 0xfae94002, "HV_BUSY"},
		{HV_BAD_ARGUMENT, 0xfae94003, "HV_BAD_ARGUMENT"},
		{HV_ILLEGAL_GUEST_STATE, 0xfae94004, "HV_ILLEGAL_GUEST_STATE"},
		{HV_NO_RESOURCES, 0xfae94005, "HV_NO_RESOURCES"},
		{HV_NO_DEVICE, 0xfae94006, "HV_NO_DEVICE"},
		{HV_DENIED, 0xfae94007, "HV_DENIED"},
		{HV_EXISTS, 0xfae94008, "HV_EXISTS"},
		{HV_UNSUPPORTED, 0xfae9400f, "HV_UNSUPPORTED"},
	} {
		if uint32(c.r) != c.hex {
			t.Errorf("%s = %#x, want %#x", c.name, uint32(c.r), c.hex)
		}
		if c.r.String() != c.name {
			t.Errorf("Return(%#x).String() = %q, want %q", c.hex, c.r.String(), c.name)
		}
	}
	if got := HV_ERROR; int32(got) != -85377023 {
		t.Errorf("HV_ERROR as int32 = %d, want -85377023", int32(got))
	}
	if got := Return(-0x516bff6).String(); got != "hv_return_t(0xfae9400a)" {
		t.Errorf("unknown code prints as %q", got)
	}
}

func TestErrorMapping(t *testing.T) {
	if err := check("hv_vcpu_run", HV_SUCCESS); err != nil {
		t.Fatalf("check(HV_SUCCESS) = %v", err)
	}
	sentinels := map[Return]*Error{
		HV_ERROR: ErrError, HV_BUSY: ErrBusy, HV_BAD_ARGUMENT: ErrBadArgument,
		HV_ILLEGAL_GUEST_STATE: ErrIllegalGuestState, HV_NO_RESOURCES: ErrNoResources,
		HV_NO_DEVICE: ErrNoDevice, HV_DENIED: ErrDenied, HV_EXISTS: ErrExists,
		HV_UNSUPPORTED: ErrUnsupported,
	}
	for code, want := range sentinels {
		err := fmt.Errorf("wrapped: %w", check("hv_vm_create", code))
		for other, s := range sentinels {
			if got := errors.Is(err, s); got != (other == code) {
				t.Errorf("errors.Is(%v, %v) = %v", err, s, got)
			}
		}
		if !errors.Is(err, want) || !errors.Is(err, &Error{Func: "hv_vm_create", Code: code}) {
			t.Errorf("%v does not match its sentinel or its function", err)
		}
		if errors.Is(err, &Error{Func: "hv_vcpu_run", Code: code}) {
			t.Errorf("%v matches another function", err)
		}
	}
	if got := check("hv_gic_set_spi", HV_BAD_ARGUMENT).Error(); got != "hv_gic_set_spi: HV_BAD_ARGUMENT (bad argument)" {
		t.Errorf("error text %q", got)
	}
}

func TestEntitlementError(t *testing.T) {
	for _, code := range []Return{HV_DENIED, HV_UNSUPPORTED} {
		err := entitlementError(check("hv_vm_create", code), "/usr/local/bin/squibd")
		for _, target := range []error{ErrNotEntitled, hv.ErrNoHypervisor, &Error{Code: code}} {
			if !errors.Is(err, target) {
				t.Errorf("%v does not wrap %v", err, target)
			}
		}
		want := "codesign --force --sign - --entitlements entitlements.plist /usr/local/bin/squibd"
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), code.String()) {
			t.Errorf("%v: want the code and %q", err, want)
		}
	}
	busy := check("hv_vm_create", HV_BUSY)
	if got := entitlementError(busy, "squibd"); got != busy {
		t.Errorf("entitlementError(HV_BUSY) = %v, want it unchanged", got)
	}
	if entitlementError(nil, "squibd") != nil {
		t.Error("entitlementError(nil) != nil")
	}
}

func TestFirstError(t *testing.T) {
	a, b := errors.New("a"), errors.New("b")
	if firstError() != nil || firstError(nil, nil) != nil {
		t.Error("firstError of no errors is not nil")
	}
	if got := firstError(nil, a, b); got != a {
		t.Errorf("firstError(nil, a, b) = %v", got)
	}
}
