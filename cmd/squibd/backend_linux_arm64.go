package main

import (
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/kvm"
)

func openHypervisor() (hv.Hypervisor, error) {
	h, err := kvm.Open()
	if err != nil {
		return nil, err
	}
	return h, nil
}
