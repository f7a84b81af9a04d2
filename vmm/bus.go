package vmm

import "log/slog"

// mmioDevice is a device behind a window of guest physical addresses.
// Offsets are relative to the window's base.
type mmioDevice interface {
	Read(off uint64, size int) uint64
	Write(off uint64, size int, v uint64)
}

type mmioWindow struct {
	base, size uint64
	name       string
	dev        mmioDevice
}

// bus routes MMIO exits to devices. It is built before the vCPUs start and
// read-only afterwards, so vCPU threads use it without locking.
type bus struct {
	log     *slog.Logger
	windows []mmioWindow
}

func (b *bus) add(base, size uint64, name string, dev mmioDevice) {
	b.windows = append(b.windows, mmioWindow{base, size, name, dev})
}

func (b *bus) find(addr uint64) *mmioWindow {
	for i := range b.windows {
		w := &b.windows[i]
		if addr >= w.base && addr-w.base < w.size {
			return w
		}
	}
	return nil
}

// read returns the value of a guest load; unclaimed addresses read as zero,
// as on a bus without a decoder there.
func (b *bus) read(addr uint64, size int) uint64 {
	if w := b.find(addr); w != nil {
		return w.dev.Read(addr-w.base, size)
	}
	b.log.Debug("MMIO read from an unclaimed address", "addr", addr, "size", size)
	return 0
}

// write delivers a guest store; stores to unclaimed addresses are dropped.
func (b *bus) write(addr uint64, size int, v uint64) {
	if w := b.find(addr); w != nil {
		w.dev.Write(addr-w.base, size, v)
		return
	}
	b.log.Debug("MMIO write to an unclaimed address", "addr", addr, "size", size, "value", v)
}
