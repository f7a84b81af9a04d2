package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"slices"

	"github.com/fxamacker/cbor/v2"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/snapshot"
)

// Pure parts of snapshot support (no KVM calls), so they are tested on any
// host: the register lists, the vGIC register tables and their blob, and
// the dirty-bitmap conversion. Sources: kvm-arm64.md §1.9, §1.12, §2.2-§2.3;
// ARM IHI 0069 §12 (GICD/GICR register offsets).

// ONE_REG ids (kvm-arm64.md §1.9). An id is KVM_REG_ARM64 | size | coproc
// | index; the size field (bits 55:52) is log2 of the value's bytes.
const (
	regX0       = 0x6030000000100000 // core registers: 0x6030_0000_0010_0000 | offset-in-kvm_regs/4
	regPC       = 0x6030000000100040
	regPSTATE   = 0x6030000000100042
	regSysBase  = 0x6030000000130000 // | encoding
	regSP       = 0x603000000010003E // SP_EL0 (user_pt_regs.sp)
	regSPEL1    = 0x6030000000100044
	regELREL1   = 0x6030000000100046
	regSPSREL1  = 0x6030000000100048 // spsr[KVM_SPSR_EL1]
	regV0       = 0x6040000000100054 // U128; Vn = V0 + 4n
	regFPSR     = 0x60200000001000D4 // U32
	regFPCR     = 0x60200000001000D5 // U32
	regMPIDR    = regSysBase | 0xC005
	regTimerCTL = 0x603000000013DF19 // KVM_REG_ARM_TIMER_CTL: CNTV_CTL_EL0
	// KVM_REG_ARM_TIMER_CNT is the guest's CNTVCT_EL0 although it is built
	// from CNTV_CVAL_EL0's encoding; TIMER_CVAL is the other way round
	// (the constants were swapped by accident and are ABI now).
	regTimerCNT  = 0x603000000013DF1A
	regTimerCVAL = 0x603000000013DF02
	// The physical timer (Linux 6.4+): PTIMER_CNT is CNTPCT_EL0.
	regPTimerCTL  = 0x603000000013DF11
	regPTimerCVAL = 0x603000000013DF12
	regPTimerCNT  = 0x603000000013DF01

	regArch64    = 0x6000000000000000
	regCoproc    = 0x000000000FFF0000
	coprocCore   = 0x0010 << 16
	coprocDemux  = 0x0011 << 16
	coprocSys    = 0x0013 << 16
	coprocFW     = 0x0014 << 16
	maxRegBytes  = 256 // U2048, the largest size an id can give (SVE Z registers)
	maxRegsSaved = 4096
)

// regSize is the byte size of register id's value.
func regSize(id uint64) int { return 1 << (id >> 52 & 0xf) }

// validRegID reports whether id is an arm64 ONE_REG id with a size this
// package handles.
func validRegID(id uint64) bool {
	return id&0xff00000000000000 == regArch64 && regSize(id) <= maxRegBytes
}

// regName spells register id for a message.
func regName(id uint64) string {
	switch id & regCoproc {
	case coprocCore:
		return fmt.Sprintf("core register %#x", id)
	case coprocSys:
		if id>>52&0xf == 3 {
			return snapshot.SysRegLabel(uint16(id))
		}
	case coprocDemux:
		return fmt.Sprintf("CCSIDR_EL1 for CSSELR %d (%#x)", id&0xff, id)
	case coprocFW:
		return fmt.Sprintf("firmware register %d (%#x)", id&0xffff, id)
	}
	return fmt.Sprintf("register %#x", id)
}

// kvmReg is one register as KVM_GET_REG_LIST names it and ONE_REG
// transfers it: the value's bytes, as many as the id's size.
type kvmReg struct {
	ID  uint64 `cbor:"1,keyasint"`
	Val []byte `cbor:"2,keyasint"`
}

// vcpuBlob is what snapshot.VCPU.Backend holds for the kvm backend: the
// KVM_ARM_VCPU_INIT features the vCPU was created with (POWER_OFF cleared,
// as Firecracker keeps them) and the registers KVM listed that have no place
// in snapshot.VCPU's fields or Sys map (AArch32 banked SPSRs, CCSIDR values,
// firmware pseudo-registers, ...).
type vcpuBlob struct {
	Version  int       `cbor:"1,keyasint"` // vcpuBlobVersion
	Features [7]uint32 `cbor:"2,keyasint"`
	Regs     []kvmReg  `cbor:"3,keyasint"`
}

const vcpuBlobVersion = 1

// field returns the field of s that holds register id: lo, and hi for
// the upper half of a V register (a U32 register is the low half of lo),
// or nil when id has no field of its own.
func field(s *snapshot.VCPU, id uint64) (lo, hi *uint64) {
	switch {
	case id >= regX0 && id <= regX0+2*30 && (id-regX0)%2 == 0:
		return &s.X[(id-regX0)/2], nil
	case id >= regV0 && id <= regV0+4*31 && (id-regV0)%4 == 0:
		v := &s.V[(id-regV0)/4]
		return &v[0], &v[1]
	}
	switch id {
	case regSP:
		return &s.SP_EL0, nil
	case regPC:
		return &s.PC, nil
	case regPSTATE:
		return &s.PSTATE, nil
	case regSPEL1:
		return &s.SP_EL1, nil
	case regELREL1:
		return &s.ELR_EL1, nil
	case regSPSREL1:
		return &s.SPSR_EL1, nil
	case regFPSR:
		return &s.FPSR, nil
	case regFPCR:
		return &s.FPCR, nil
	case regMPIDR:
		return &s.MPIDR, nil
	case regTimerCTL:
		return &s.Timer.CTL, nil
	case regTimerCVAL:
		return &s.Timer.CVAL, nil
	case regTimerCNT:
		return &s.Timer.Counter, nil
	}
	return nil, nil
}

// inSys reports whether register id is kept in snapshot.VCPU.Sys: a 64-bit
// system register without a field of its own.
func inSys(id uint64) bool {
	return id&^0xffff == regSysBase && id != regMPIDR && id != regTimerCTL && id != regTimerCVAL && id != regTimerCNT
}

// neutralIDs are the ids of snapshot.VCPU's register fields, which KVM
// always lists.
var neutralIDs = func() []uint64 {
	var ids []uint64
	for i := range uint64(31) {
		ids = append(ids, regX0+2*i)
	}
	ids = append(ids, regSP, regPC, regPSTATE, regSPEL1, regELREL1, regSPSREL1)
	for i := range uint64(32) {
		ids = append(ids, regV0+4*i)
	}
	return append(ids, regFPSR, regFPCR, regMPIDR, regTimerCTL, regTimerCVAL, regTimerCNT)
}()

// split files the registers KVM listed into s: each in its field or in
// s.Sys, and returns the others, for the backend blob.
func split(s *snapshot.VCPU, regs []kvmReg) []kvmReg {
	var rest []kvmReg
	s.Sys = map[uint16]uint64{}
	for _, r := range regs {
		if lo, hi := field(s, r.ID); lo != nil {
			var b [16]byte
			copy(b[:], r.Val)
			*lo = binary.LittleEndian.Uint64(b[:8])
			if hi != nil {
				*hi = binary.LittleEndian.Uint64(b[8:])
			}
			continue
		}
		if inSys(r.ID) {
			s.Sys[uint16(r.ID)] = binary.LittleEndian.Uint64(r.Val)
			continue
		}
		rest = append(rest, r)
	}
	return rest
}

// join is split's inverse: every register s and rest hold, by id.
func join(s *snapshot.VCPU, rest []kvmReg) map[uint64][]byte {
	out := make(map[uint64][]byte, len(neutralIDs)+len(s.Sys)+len(rest))
	for _, id := range neutralIDs {
		lo, hi := field(s, id)
		b := binary.LittleEndian.AppendUint64(nil, *lo)
		if hi != nil {
			b = binary.LittleEndian.AppendUint64(b, *hi)
		}
		out[id] = b[:regSize(id)]
	}
	for enc, x := range s.Sys {
		out[regSysBase|uint64(enc)] = binary.LittleEndian.AppendUint64(nil, x)
	}
	for _, r := range rest {
		out[r.ID] = r.Val
	}
	return out
}

// checkBlob checks a decoded backend blob as a hostile file's content: its
// version, and registers that are well-formed, sized as their ids say, not
// repeated and not ones that belong in a field or in Sys.
func checkBlob(b *vcpuBlob) error {
	if b.Version != vcpuBlobVersion {
		return fmt.Errorf("KVM register blob version %d, this squib reads %d", b.Version, vcpuBlobVersion)
	}
	if len(b.Regs) > maxRegsSaved {
		return fmt.Errorf("%d KVM registers, more than the %d squib accepts", len(b.Regs), maxRegsSaved)
	}
	var probe snapshot.VCPU
	seen := make(map[uint64]bool, len(b.Regs))
	for _, r := range b.Regs {
		lo, _ := field(&probe, r.ID)
		switch {
		case !validRegID(r.ID):
			return fmt.Errorf("KVM register id %#x is not an arm64 register", r.ID)
		case len(r.Val) != regSize(r.ID):
			return fmt.Errorf("%s holds %d bytes, its id says %d", regName(r.ID), len(r.Val), regSize(r.ID))
		case seen[r.ID]:
			return fmt.Errorf("%s appears twice", regName(r.ID))
		case lo != nil || inSys(r.ID):
			return fmt.Errorf("%s is in the KVM register blob; it belongs to the vCPU's own fields", regName(r.ID))
		}
		seen[r.ID] = true
	}
	return nil
}

// isIDReg reports whether register id is covered by the ID-register rule
// (snapshot.IDReg), or is a CCSIDR value (cache geometry, as guest-visible
// as CLIDR): such registers are compared with the host's, never written.
func isIDReg(id uint64) bool {
	return (id&^0xffff == regSysBase && snapshot.IDReg(uint16(id))) || id&regCoproc == coprocDemux
}

// Counters and their timers, restored after every other register: the
// counters first (each sets a VM-wide offset), then each timer's compare
// value and control, so they are judged against the restored count.
var (
	counterIDs = []uint64{regTimerCNT, regPTimerCNT}
	timerIDs   = []uint64{regTimerCVAL, regTimerCTL, regPTimerCVAL, regPTimerCTL}
)

// restoreOrder returns the saved registers to write, in the order KVM
// needs: the host's list order (which is KVM's own), then the counters,
// then the timers. ID registers are left out (they are compared, not
// written). A saved register the host does not list refuses the restore.
func restoreOrder(host []uint64, saved map[uint64][]byte) ([]uint64, error) {
	listed := make(map[uint64]bool, len(host))
	for _, id := range host {
		listed[id] = true
	}
	for _, id := range slices.Sorted(maps.Keys(saved)) {
		if !listed[id] {
			return nil, fmt.Errorf("%w: the snapshot has %s, which this host's KVM does not have", snapshot.ErrHost, regName(id))
		}
	}
	late := append(slices.Clone(counterIDs), timerIDs...)
	var out []uint64
	for _, id := range host {
		if _, ok := saved[id]; ok && !isIDReg(id) && !slices.Contains(late, id) {
			out = append(out, id)
		}
	}
	for _, id := range late {
		if _, ok := saved[id]; ok {
			out = append(out, id)
		}
	}
	return out, nil
}

// vGICv3 attribute groups used for save/restore (§2.2).
const (
	vgicGrpDistRegs   = 1
	vgicGrpRedistRegs = 5
	vgicGrpCPUSysregs = 6
	vgicGrpLevelInfo  = 7
)

// mpidrAttr is the affinity field of a vGIC register attr for the vCPU with
// MPIDR_EL1 m: Aff3<<56 | Aff2<<48 | Aff1<<40 | Aff0<<32 (§2.2; not the raw
// MPIDR).
func mpidrAttr(m uint64) uint64 {
	return (m>>32&0xff)<<56 | (m>>16&0xff)<<48 | (m>>8&0xff)<<40 | (m&0xff)<<32
}

// GIC register offsets (IHI 0069 §12.9 GICD, §12.10-12.11 GICR).
const (
	gicdCTLR       = 0x0000
	gicdIIDR       = 0x0008
	gicdSTATUSR    = 0x0010
	gicdIGROUPR    = 0x0080
	gicdISENABLER  = 0x0100
	gicdISPENDR    = 0x0200
	gicdISACTIVER  = 0x0300
	gicdIPRIORITYR = 0x0400
	gicdICFGR      = 0x0C00
	gicdIROUTER    = 0x6000

	// set-register + clearOffset is its clear-register (ICENABLER,
	// ICPENDR, ICACTIVER), in GICD and in the GICR SGI frame alike.
	clearOffset = 0x80

	gicrCTLR    = 0x0000
	gicrSTATUSR = 0x0010
	gicrWAKER   = 0x0014
	gicrSGIBase = 0x10000 // the SGI_base frame follows RD_base
)

// gicReg is one 32-bit (DIST/REDIST/LEVEL_INFO) or 64-bit (CPU_SYSREGS)
// vGIC register access: the triple KVM_{GET,SET}_DEVICE_ATTR takes.
type gicReg struct {
	Group uint32 `cbor:"1,keyasint"`
	Attr  uint64 `cbor:"2,keyasint"`
	Val   uint64 `cbor:"3,keyasint"`
}

// isSetReg reports whether a DIST/REDIST offset is a set-register whose
// clear-register must be written with all ones before it on restore.
func isSetReg(group uint32, off uint32) bool {
	if group == vgicGrpRedistRegs {
		if off < gicrSGIBase {
			return false
		}
		off -= gicrSGIBase
		return off == gicdISENABLER || off == gicdISPENDR || off == gicdISACTIVER
	}
	if group != vgicGrpDistRegs {
		return false
	}
	for _, base := range []uint32{gicdISENABLER, gicdISPENDR, gicdISACTIVER} {
		if off >= base && off < base+clearOffset {
			return true
		}
	}
	return false
}

// distRegs lists the distributor registers saved, in restore order (as
// QEMU's kvm_arm_gicv3_put writes them; kvm-arm64.md §2.3): IIDR first (it
// selects the implementation revision), CTLR, STATUSR, then the SPI part of
// every per-interrupt register (the SGI/PPI part is RAZ/WI with affinity
// routing), targets (IROUTER) and configuration (ICFGR) before the line
// levels and pending state, priorities last. nrIRQs includes the 32 private
// interrupts. DIST_REGS attrs carry no affinity (KVM ignores it); the SPIs'
// LEVEL_INFO attrs need a vCPU's, mpidr0 is vCPU 0's MPIDR_EL1.
func distRegs(nrIRQs uint32, mpidr0 uint64) []gicReg {
	var r []gicReg
	add := func(group uint32, off uint32) { r = append(r, gicReg{Group: group, Attr: uint64(off)}) }
	add(vgicGrpDistRegs, gicdIIDR)
	add(vgicGrpDistRegs, gicdCTLR)
	add(vgicGrpDistRegs, gicdSTATUSR)
	bits1 := func(base uint32) { // one bit per interrupt
		for id := uint32(32); id < nrIRQs; id += 32 {
			add(vgicGrpDistRegs, base+id/8)
		}
	}
	bits1(gicdISENABLER)
	bits1(gicdIGROUPR)
	for id := uint32(32); id < nrIRQs; id++ { // 64-bit, two halves
		add(vgicGrpDistRegs, gicdIROUTER+8*id)
		add(vgicGrpDistRegs, gicdIROUTER+8*id+4)
	}
	for id := uint32(32); id < nrIRQs; id += 16 { // two bits per interrupt
		add(vgicGrpDistRegs, gicdICFGR+id/4)
	}
	for id := uint32(32); id < nrIRQs; id += 32 { // line levels, 32 per access
		r = append(r, gicReg{Group: vgicGrpLevelInfo, Attr: mpidrAttr(mpidr0) | uint64(id)})
	}
	bits1(gicdISPENDR)
	bits1(gicdISACTIVER)
	for id := uint32(32); id < nrIRQs; id += 4 { // one byte per interrupt
		add(vgicGrpDistRegs, gicdIPRIORITYR+id)
	}
	return r
}

// redistRegs lists one vCPU's redistributor registers, in restore order:
// the RD_base frame's CTLR, STATUSR and WAKER, then the SGI frame's
// IGROUPR0, ISENABLER0, ICFGR0/1, line levels of the private interrupts,
// ISPENDR0, ISACTIVER0 and IPRIORITYR0-7. GICR_PROPBASER and PENDBASER are
// left out: squib's GIC has no ITS, so there are no LPIs.
func redistRegs(mpidr uint64) []gicReg {
	aff := mpidrAttr(mpidr)
	var r []gicReg
	add := func(group uint32, off uint32) { r = append(r, gicReg{Group: group, Attr: aff | uint64(off)}) }
	add(vgicGrpRedistRegs, gicrCTLR)
	add(vgicGrpRedistRegs, gicrSTATUSR)
	add(vgicGrpRedistRegs, gicrWAKER)
	add(vgicGrpRedistRegs, gicrSGIBase+gicdIGROUPR)
	add(vgicGrpRedistRegs, gicrSGIBase+gicdISENABLER)
	add(vgicGrpRedistRegs, gicrSGIBase+gicdICFGR)
	add(vgicGrpRedistRegs, gicrSGIBase+gicdICFGR+4)
	add(vgicGrpLevelInfo, 0)
	add(vgicGrpRedistRegs, gicrSGIBase+gicdISPENDR)
	add(vgicGrpRedistRegs, gicrSGIBase+gicdISACTIVER)
	for i := uint32(0); i < 8; i++ {
		add(vgicGrpRedistRegs, gicrSGIBase+gicdIPRIORITYR+4*i)
	}
	return r
}

// iccRegs lists the CPU-interface registers saved per vCPU, in restore
// order: SRE first (it selects the system-register interface), CTLR, the
// group enables, PMR, the binary points, then the active-priority registers
// the implemented priority bits give (apRegs).
var iccRegs = []uint16{
	gic.ICC_SRE_EL1, gic.ICC_CTLR_EL1, gic.ICC_IGRPEN0_EL1, gic.ICC_IGRPEN1_EL1,
	gic.ICC_PMR_EL1, gic.ICC_BPR0_EL1, gic.ICC_BPR1_EL1,
}

// apRegs returns the ICC_AP0Rn_EL1 and ICC_AP1Rn_EL1 registers that exist
// for an ICC_CTLR_EL1 value: PRIbits (bits 10:8) + 1 priority bits give one
// (5 bits), two (6) or four (7) of each (IHI 0069 §12.2.1-§12.2.4).
func apRegs(ctlr uint64) []uint16 {
	n := 1
	switch ctlr>>8&7 + 1 {
	case 6:
		n = 2
	case 7:
		n = 4
	}
	var r []uint16
	for i := range n {
		r = append(r, gic.ICC_AP0R0_EL1+uint16(i))
	}
	for i := range n {
		r = append(r, gic.ICC_AP1R0_EL1+uint16(i))
	}
	return r
}

// gicBlob is what gic.State.Blob holds for the kvm backend: the vGIC's
// distributor and redistributor registers as (group, attr, value) triples
// in restore order, CBOR-encoded.
type gicBlob struct {
	Version int      `cbor:"1,keyasint"` // gicBlobVersion
	NrIRQs  uint32   `cbor:"2,keyasint"` // KVM_DEV_ARM_VGIC_GRP_NR_IRQS of the VM saved
	VCPUs   int      `cbor:"3,keyasint"`
	Regs    []gicReg `cbor:"4,keyasint"`
}

const gicBlobVersion = 1

var blobEnc = func() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

func (b *gicBlob) marshal() ([]byte, error) { return blobEnc.Marshal(b) }

// parseGICBlob decodes a blob and checks it fits a VM with nrIRQs
// interrupts and vcpus vCPUs. Errors wrap gic.ErrIncompatibleState.
func parseGICBlob(data []byte, nrIRQs uint32, vcpus int) (*gicBlob, error) {
	var b gicBlob
	if len(data) == 0 {
		return nil, fmt.Errorf("gic: %w: the snapshot has no vGIC register blob", gic.ErrIncompatibleState)
	}
	if err := cbor.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("gic: %w: vGIC register blob: %v", gic.ErrIncompatibleState, err)
	}
	switch {
	case b.Version != gicBlobVersion:
		return nil, fmt.Errorf("gic: %w: vGIC blob version %d, this squib reads %d", gic.ErrIncompatibleState, b.Version, gicBlobVersion)
	case b.NrIRQs != nrIRQs:
		return nil, fmt.Errorf("gic: %w: saved with %d interrupts, VM has %d", gic.ErrIncompatibleState, b.NrIRQs, nrIRQs)
	case b.VCPUs != vcpus:
		return nil, fmt.Errorf("gic: %w: saved with %d vCPUs, VM has %d", gic.ErrIncompatibleState, b.VCPUs, vcpus)
	}
	for _, r := range b.Regs {
		switch r.Group {
		case vgicGrpDistRegs, vgicGrpRedistRegs, vgicGrpLevelInfo:
			if r.Val > 0xffffffff {
				return nil, fmt.Errorf("gic: %w: 32-bit vGIC register %d/%#x holds %#x", gic.ErrIncompatibleState, r.Group, r.Attr, r.Val)
			}
		default:
			return nil, fmt.Errorf("gic: %w: vGIC attribute group %d in the blob", gic.ErrIncompatibleState, r.Group)
		}
	}
	return &b, nil
}

// blockBitmap converts KVM_GET_DIRTY_LOG's bitmap (bit i: host page i of the
// slot) into one bit per block of blockSize bytes, for a slot of size bytes.
// blockSize must be a multiple of hostPage.
func blockBitmap(pages []uint64, hostPage, blockSize, size uint64) ([]uint64, error) {
	if hostPage == 0 || blockSize < hostPage || blockSize%hostPage != 0 {
		return nil, fmt.Errorf("dirty block size %d is not a multiple of the host page size %d", blockSize, hostPage)
	}
	per := blockSize / hostPage
	nblocks := (size + blockSize - 1) / blockSize
	out := make([]uint64, (nblocks+63)/64)
	npages := (size + hostPage - 1) / hostPage
	for w, word := range pages {
		for word != 0 {
			b := uint64(bits.TrailingZeros64(word))
			word &^= 1 << b
			page := uint64(w)*64 + b
			if page >= npages {
				return nil, errors.New("dirty log reports a page beyond the memory slot")
			}
			blk := page / per
			out[blk/64] |= 1 << (blk % 64)
		}
	}
	return out, nil
}
