package loader

import (
	"fmt"
	"io"

	"github.com/squibvm/squib/memory"
)

const (
	mib = 1 << 20
	// DTBMax is the largest device tree the kernel accepts (booting.rst).
	DTBMax = 2 * mib
	// initrdAlign keeps the initrd aligned for any guest page size.
	initrdAlign = 64 << 10
)

// Layout is where the boot payload goes in guest physical memory.
type Layout struct {
	Kernel    uint64 // entry point: 2 MiB-aligned RAM base + text_offset
	KernelEnd uint64 // end of the kernel's footprint, BSS included
	Initrd    uint64 // start of the initrd (0 when there is none)
	InitrdEnd uint64 // exclusive end of the initrd
	DTB       uint64 // device tree address, 8-byte aligned, in the last 2 MiB of RAM
}

// Place lays out the kernel at the start of RAM, the device tree in the last
// 2 MiB and the initrd right below it. It fails with a message naming the
// sizes when they do not fit.
func Place(ramBase, ramSize uint64, img *Image, initrdSize uint64) (Layout, error) {
	var l Layout
	if ramBase%(2*mib) != 0 {
		return l, fmt.Errorf("RAM base %#x is not 2 MiB aligned", ramBase)
	}
	l.Kernel = ramBase + img.TextOffset
	l.KernelEnd = l.Kernel + img.Size
	need := img.TextOffset + img.Size + alignUp(initrdSize, initrdAlign) + DTBMax
	if ramSize < need || ramSize < DTBMax {
		return l, fmt.Errorf("memory too small: the kernel (%.1f MiB), initrd (%.1f MiB) and device tree (2 MiB) need at least %d MiB",
			float64(img.Size)/mib, float64(initrdSize)/mib, alignUp(need, mib)/mib)
	}
	l.DTB = ramBase + ramSize - DTBMax
	if initrdSize > 0 {
		l.Initrd = alignDown(l.DTB-initrdSize, initrdAlign)
		l.InitrdEnd = l.Initrd + initrdSize
	}
	return l, nil
}

// Load streams the kernel and initrd into RAM at their places.
func Load(ram *memory.RAM, l Layout, img *Image, initrd File) error {
	dst, err := ram.Slice(l.Kernel, img.Size)
	if err != nil {
		return fmt.Errorf("loading kernel: %w", err)
	}
	if err := img.load(dst); err != nil {
		return fmt.Errorf("loading kernel: %w", err)
	}
	if initrd.Size > 0 {
		dst, err := ram.Slice(l.Initrd, uint64(initrd.Size))
		if err != nil {
			return fmt.Errorf("loading initrd: %w", err)
		}
		if _, err := io.ReadFull(io.NewSectionReader(initrd, 0, initrd.Size), dst); err != nil {
			return fmt.Errorf("loading initrd: %w", err)
		}
	}
	return nil
}

func alignUp(v, a uint64) uint64   { return (v + a - 1) &^ (a - 1) }
func alignDown(v, a uint64) uint64 { return v &^ (a - 1) }
