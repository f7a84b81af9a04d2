//go:build !(linux && arm64)

package main

import (
	"fmt"
	"runtime"

	"github.com/squibvm/squib/hv"
)

func openHypervisor() (hv.Hypervisor, error) {
	return nil, fmt.Errorf("%w: squibd runs guests on linux/arm64 with KVM; this is %s/%s", hv.ErrNoHypervisor, runtime.GOOS, runtime.GOARCH)
}
