package main

import (
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/hvf"
)

func openHypervisor() (hv.Hypervisor, error) {
	h, err := hvf.Open()
	if err != nil {
		return nil, err
	}
	return h, nil
}
