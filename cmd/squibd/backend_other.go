//go:build !(linux && arm64) && !(darwin && arm64)

package main

import (
	"fmt"
	"runtime"

	"github.com/squibvm/squib/hv"
)

func openHypervisor() (hv.Hypervisor, error) {
	return nil, fmt.Errorf("%w: squibd runs guests on linux/arm64 (KVM) or macOS on Apple Silicon (Hypervisor.framework); this is %s/%s", hv.ErrNoHypervisor, runtime.GOOS, runtime.GOARCH)
}
