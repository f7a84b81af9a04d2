package psci

import (
	"errors"
	"fmt"
	"sync"
)

// Power is the PSCI power state of one vCPU. The values are the ones AFFINITY_INFO returns
// for a single core (DEN0022, AFFINITY_INFO: ON 0, OFF 1, ON_PENDING 2). Snapshots store
// them, so they must not change.
type Power int

// vCPU power states.
const (
	On        Power = 0 // running guest code
	Off       Power = 1 // stopped; only CPU_ON starts it
	OnPending Power = 2 // CPU_ON accepted, the VMM has not yet called Started
)

var powerNames = [...]string{On: "On", Off: "Off", OnPending: "OnPending"}

func (p Power) valid() bool { return p >= On && p <= OnPending }

func (p Power) String() string {
	if p.valid() {
		return powerNames[p]
	}
	return fmt.Sprintf("Power(%d)", int(p))
}

// ActionKind says what the VMM does after it has written Result.X to x0..x3.
type ActionKind int

const (
	// None: resume the calling vCPU.
	None ActionKind = iota
	// CPUOn: resume the caller, and start vCPU Action.Target with an architectural warm
	// reset, PC = Action.Entry and x0 = Action.Context, in the caller's exception level
	// and endianness, MMU off (DEN0022, CPU_ON). The VMM calls Machine.Started on the
	// target's thread once that is set up and before the target runs guest code.
	CPUOn
	// CPUOff: stop running the calling vCPU until a later CPU_ON names it. The call does
	// not return to the guest.
	CPUOff
	// Suspend: behave like WFI. Wait until the caller has a pending interrupt (or
	// return early, as WFI may), then resume it; x0 is already SUCCESS.
	Suspend
	// SystemOff: power the VM off. The call does not return to the guest.
	SystemOff
	// SystemReset: reset the whole VM. The call does not return to the guest.
	SystemReset
)

var actionNames = [...]string{
	None: "None", CPUOn: "CPUOn", CPUOff: "CPUOff", Suspend: "Suspend",
	SystemOff: "SystemOff", SystemReset: "SystemReset",
}

func (k ActionKind) String() string {
	if k >= 0 && int(k) < len(actionNames) {
		return actionNames[k]
	}
	return fmt.Sprintf("ActionKind(%d)", int(k))
}

// Action is the work a call leaves for the VMM. Target, Entry and Context are set only for
// CPUOn.
type Action struct {
	Kind    ActionKind
	Target  int    // vCPU index to start
	Entry   uint64 // guest physical address the target starts at
	Context uint64 // value for the target's x0
}

// Result is the outcome of one call. The VMM writes X[0..3] to x0..x3 (as KVM and kvmtool
// do), then carries out Action. No implemented function returns more than x0, so X[1..3]
// are zero. Values are already in the caller's convention: truncated to 32 bits for
// SMC32/HVC32 calls (NOT_SUPPORTED is 0xFFFFFFFF), sign-extended to 64 bits for
// SMC64/HVC64 calls (NOT_SUPPORTED is 0xFFFFFFFFFFFFFFFF).
type Result struct {
	X      [4]uint64
	Action Action
}

// Config describes the VM to New.
type Config struct {
	// MPIDRs holds MPIDR_EL1 of each vCPU; the index is the vCPU index, and vCPU 0 is the
	// boot CPU. Only the affinity fields (see affinityMask) identify a vCPU, so the
	// entries must differ in them.
	MPIDRs []uint64
	// ValidEntry reports whether addr is a usable entry point (a guest physical address
	// inside RAM); CPU_ON returns INVALID_ADDRESS when it is not. It is called from
	// Handle, without the Machine's lock, so it must be safe for concurrent use.
	ValidEntry func(addr uint64) bool
}

// affinityMask selects MPIDR_EL1.{Aff3, Aff2, Aff1, Aff0}, bits 39:32 and 23:0. The other
// bits (RES1 bit 31, U bit 30, MT bit 24, RES0 bits) do not identify a core, and PSCI
// requires them to be zero in target_cpu and target_affinity (DEN0022, CPU_ON).
const affinityMask = 0xFF_00FF_FFFF

// levelShift[n] is the position of the lowest bit of affinity level n in an MPIDR.
var levelShift = [...]uint{0, 8, 16, 32}

// Machine is the PSCI firmware of one VM. All methods are safe for concurrent use by the
// vCPU threads.
type Machine struct {
	affinity   []uint64 // MPIDR affinity fields per vCPU; immutable
	validEntry func(uint64) bool

	mu    sync.Mutex
	power []Power // guarded by mu
}

// New returns a Machine in the cold-boot state: vCPU 0 On, every other vCPU Off.
func New(cfg Config) (*Machine, error) {
	if len(cfg.MPIDRs) == 0 {
		return nil, errors.New("psci: no vCPUs")
	}
	if cfg.ValidEntry == nil {
		return nil, errors.New("psci: Config.ValidEntry is nil")
	}
	m := &Machine{
		affinity:   make([]uint64, len(cfg.MPIDRs)),
		validEntry: cfg.ValidEntry,
		power:      make([]Power, len(cfg.MPIDRs)),
	}
	seen := make(map[uint64]int, len(cfg.MPIDRs))
	for i, mpidr := range cfg.MPIDRs {
		a := mpidr & affinityMask
		if j, dup := seen[a]; dup {
			return nil, fmt.Errorf("psci: vCPUs %d and %d have the same MPIDR affinity %#x", j, i, a)
		}
		seen[a] = i
		m.affinity[i] = a
		m.power[i] = Off
	}
	m.power[0] = On
	return m, nil
}

// Handle runs the call that vCPU caller made with function ID fid (w0) and arguments
// x1..x3. For SMC32/HVC32 function IDs only the low 32 bits of args are used.
//
// Handle never panics. NOT_SUPPORTED is the answer to an unknown caller, to a function
// this package does not implement, and to a malformed fid (a yielding call, bits 23:16
// not zero). The implemented functions are PSCI_VERSION, CPU_SUSPEND, CPU_OFF, CPU_ON,
// AFFINITY_INFO, MIGRATE_INFO_TYPE, SYSTEM_OFF, SYSTEM_RESET, PSCI_FEATURES, SMCCC_VERSION
// and SMCCC_ARCH_FEATURES; see the methods named after them for the details.
func (m *Machine) Handle(caller int, fid uint32, args [3]uint64) Result {
	f := FunctionID(fid)
	if !f.is64() {
		for i := range args {
			args[i] = uint64(uint32(args[i]))
		}
	}
	x0, act := int32(NOT_SUPPORTED), Action{}
	if fn := implementation(f); fn != nil && caller >= 0 && caller < len(m.affinity) {
		x0, act = fn(m, caller, args)
	}
	r := Result{Action: act}
	if f.is64() {
		r.X[0] = uint64(int64(x0))
	} else {
		r.X[0] = uint64(uint32(x0))
	}
	return r
}

// function implements one call. It returns the signed 32-bit value for w0/x0, which is a
// Return code or a non-negative function result.
type function func(m *Machine, caller int, args [3]uint64) (int32, Action)

// implementation returns the implementation of f, or nil. It is the one list of
// implemented functions: PSCI_FEATURES and SMCCC_ARCH_FEATURES answer from it too.
func implementation(f FunctionID) function {
	switch f {
	case PSCI_VERSION:
		return (*Machine).psciVersion
	case CPU_SUSPEND_32, CPU_SUSPEND_64:
		return (*Machine).cpuSuspend
	case CPU_OFF:
		return (*Machine).cpuOff
	case CPU_ON_32, CPU_ON_64:
		return (*Machine).cpuOn
	case AFFINITY_INFO_32, AFFINITY_INFO_64:
		return (*Machine).affinityInfo
	case MIGRATE_INFO_TYPE:
		return (*Machine).migrateInfoType
	case SYSTEM_OFF:
		return (*Machine).systemOff
	case SYSTEM_RESET:
		return (*Machine).systemReset
	case PSCI_FEATURES:
		return (*Machine).psciFeatures
	case SMCCC_VERSION:
		return (*Machine).smcccVersion
	case SMCCC_ARCH_FEATURES:
		return (*Machine).smcccArchFeatures
	}
	return nil
}

// code is the result of a call that returns only r.
func code(r Return) (int32, Action) { return int32(r), Action{} }

// psciVersion implements PSCI_VERSION (DEN0022): Version.
func (m *Machine) psciVersion(int, [3]uint64) (int32, Action) { return Version, Action{} }

// cpuSuspend implements CPU_SUSPEND(power_state, entry_point, context_id) (DEN0022). Like
// KVM, it treats every power_state as a standby state: the caller waits for an interrupt
// and the call returns SUCCESS. PSCI allows an implementation to enter a shallower state
// than the one requested, so a powerdown request is honoured the same way, and
// entry_point and context_id are not used.
func (m *Machine) cpuSuspend(int, [3]uint64) (int32, Action) {
	return int32(SUCCESS), Action{Kind: Suspend}
}

// cpuOff implements CPU_OFF (DEN0022): the caller becomes Off and the VMM stops it.
//
// PSCI lets the last running core call CPU_OFF, and so does this package: the VM is then
// left with no vCPU that can run, which Halted reports. DENIED is returned only when the
// caller is not On, which means the VMM ran a vCPU that PSCI had not started.
func (m *Machine) cpuOff(caller int, _ [3]uint64) (int32, Action) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.power[caller] != On {
		return code(DENIED)
	}
	m.power[caller] = Off
	return int32(SUCCESS), Action{Kind: CPUOff}
}

// cpuOn implements CPU_ON(target_cpu, entry_point_address, context_id) (DEN0022). The
// errors are checked in this order:
//
//   - INVALID_PARAMETERS: target_cpu has bits set outside the affinity fields (as in
//     KVM), or no vCPU has that affinity;
//   - INVALID_ADDRESS: Config.ValidEntry rejects entry_point_address;
//   - ALREADY_ON: the target is On (including a vCPU naming itself);
//   - ON_PENDING: an earlier CPU_ON of the target has not yet taken effect.
//
// Otherwise the target becomes OnPending and the Action asks the VMM to start it.
func (m *Machine) cpuOn(_ int, args [3]uint64) (int32, Action) {
	target, entry, context := args[0], args[1], args[2]
	i := m.find(target)
	if i < 0 {
		return code(INVALID_PARAMETERS)
	}
	if !m.validEntry(entry) {
		return code(INVALID_ADDRESS)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch m.power[i] {
	case On:
		return code(ALREADY_ON)
	case OnPending:
		return code(ON_PENDING)
	}
	m.power[i] = OnPending
	return int32(SUCCESS), Action{Kind: CPUOn, Target: i, Entry: entry, Context: context}
}

// find returns the index of the vCPU whose affinity is target, or -1.
func (m *Machine) find(target uint64) int {
	if target&^affinityMask != 0 {
		return -1
	}
	for i, a := range m.affinity {
		if a == target {
			return i
		}
	}
	return -1
}

// affinityInfo implements AFFINITY_INFO(target_affinity, lowest_affinity_level) (DEN0022).
// The affinity instance is every vCPU whose affinity fields at lowest_affinity_level and
// above equal those of target_affinity; the fields below that level are ignored, as in
// KVM. The answer is ON (0) when any of them is On, else ON_PENDING (2) when any is
// OnPending, else OFF (1); for level 0 that is the state of the single matching vCPU.
// INVALID_PARAMETERS is returned when target_affinity has bits set outside the affinity
// fields, lowest_affinity_level is above 3, or no vCPU matches (KVM answers OFF here;
// Trusted Firmware-A answers INVALID_PARAMETERS for an unknown core, as this does).
func (m *Machine) affinityInfo(_ int, args [3]uint64) (int32, Action) {
	target, level := args[0], args[1]
	if target&^affinityMask != 0 || level >= uint64(len(levelShift)) {
		return code(INVALID_PARAMETERS)
	}
	mask := uint64(affinityMask) &^ (1<<levelShift[level] - 1)
	m.mu.Lock()
	defer m.mu.Unlock()
	found, state := false, Off
	for i, a := range m.affinity {
		if a&mask != target&mask {
			continue
		}
		found = true
		switch m.power[i] {
		case On:
			return int32(On), Action{}
		case OnPending:
			state = OnPending
		}
	}
	if !found {
		return code(INVALID_PARAMETERS)
	}
	return int32(state), Action{}
}

// migrateInfoTypeNone is MIGRATE_INFO_TYPE's answer "Trusted OS is either not present or
// does not require migration" (DEN0022, MIGRATE_INFO_TYPE). With it, MIGRATE and
// MIGRATE_INFO_UP_CPU are not needed, and this package does not implement them.
const migrateInfoTypeNone = 2

// migrateInfoType implements MIGRATE_INFO_TYPE (DEN0022): there is no Trusted OS.
func (m *Machine) migrateInfoType(int, [3]uint64) (int32, Action) {
	return migrateInfoTypeNone, Action{}
}

// systemOff implements SYSTEM_OFF (DEN0022).
func (m *Machine) systemOff(int, [3]uint64) (int32, Action) {
	return int32(SUCCESS), Action{Kind: SystemOff}
}

// systemReset implements SYSTEM_RESET (DEN0022).
func (m *Machine) systemReset(int, [3]uint64) (int32, Action) {
	return int32(SUCCESS), Action{Kind: SystemReset}
}

// cpuSuspendFeatures is PSCI_FEATURES(CPU_SUSPEND): bit 1 clear, power_state uses the
// original format; bit 0 clear, OS-initiated mode is not supported (DEN0022, PSCI_FEATURES).
const cpuSuspendFeatures = 0

// psciFeatures implements PSCI_FEATURES(psci_func_id) (DEN0022). The query may name a PSCI
// function or SMCCC_VERSION; the answer is SUCCESS (feature flags, for CPU_SUSPEND) when
// Handle implements it, NOT_SUPPORTED otherwise. Like KVM, this includes the SMC64 IDs.
func (m *Machine) psciFeatures(_ int, args [3]uint64) (int32, Action) {
	q := FunctionID(args[0])
	switch {
	case implementation(q) == nil || (q.owner() != ownerStandardSecure && q != SMCCC_VERSION):
		return code(NOT_SUPPORTED)
	case q == CPU_SUSPEND_32 || q == CPU_SUSPEND_64:
		return cpuSuspendFeatures, Action{}
	}
	return code(SUCCESS)
}

// smcccVersion implements SMCCC_VERSION (DEN0028): SMCCCVersion.
func (m *Machine) smcccVersion(int, [3]uint64) (int32, Action) {
	return SMCCCVersion, Action{}
}

// smcccArchFeatures implements SMCCC_ARCH_FEATURES(arch_func_id) (DEN0028): SUCCESS for
// the Arm architecture calls Handle implements (SMCCC_VERSION and SMCCC_ARCH_FEATURES, as
// Trusted Firmware-A answers), NOT_SUPPORTED for the rest. That includes the
// SMCCC_ARCH_WORKAROUND_* calls: squib offers no firmware mitigations, so the guest must
// not call them.
func (m *Machine) smcccArchFeatures(_ int, args [3]uint64) (int32, Action) {
	q := FunctionID(args[0])
	if implementation(q) == nil || q.owner() != ownerArm {
		return code(NOT_SUPPORTED)
	}
	return code(SUCCESS)
}

// Started records that the CPUOn action for vcpu has taken effect: OnPending becomes On.
// The VMM calls it on the target vCPU's own thread before the target runs guest code. It
// does nothing for a vCPU that is not OnPending or an index out of range.
func (m *Machine) Started(vcpu int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if vcpu >= 0 && vcpu < len(m.power) && m.power[vcpu] == OnPending {
		m.power[vcpu] = On
	}
}

// Power returns the power state of vcpu, or Off for an index out of range.
func (m *Machine) Power(vcpu int) Power {
	m.mu.Lock()
	defer m.mu.Unlock()
	if vcpu < 0 || vcpu >= len(m.power) {
		return Off
	}
	return m.power[vcpu]
}

// Halted reports whether no vCPU is On or OnPending, which happens when the last running
// vCPU calls CPU_OFF. Only a running vCPU can issue CPU_ON, so the VM can never run again;
// the VMM should treat this like SYSTEM_OFF.
func (m *Machine) Halted() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.power {
		if p != Off {
			return false
		}
	}
	return true
}

// PowerStates returns a copy of every vCPU's power state, for a snapshot.
func (m *Machine) PowerStates() []Power {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Power(nil), m.power...)
}

// SetPowerStates replaces every vCPU's power state, for a restore; see RestoreShape. It
// fails, changing nothing, when p has the wrong length or holds an invalid value.
func (m *Machine) SetPowerStates(p []Power) error {
	if len(p) != len(m.affinity) {
		return fmt.Errorf("psci: %d power states for %d vCPUs", len(p), len(m.affinity))
	}
	for i, s := range p {
		if !s.valid() {
			return fmt.Errorf("psci: vCPU %d: invalid power state %d", i, int(s))
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.power, p)
	return nil
}

// RestorePolicy chooses the power states a restored VM resumes with; see RestoreShape.
type RestorePolicy int

const (
	// RestoreSaved, the default, resumes every vCPU in its saved state, with OnPending as
	// On. A vCPU is OnPending between CPU_ON and Started, and the guest has already seen
	// its CPU_ON succeed, so restoring it Off would lose that CPU. Restoring it On is
	// right only if the VMM finishes every pending CPUOn action (PC = Entry, x0 = Context)
	// before it captures vCPU registers, so the saved registers are the target's entry
	// state.
	RestoreSaved RestorePolicy = iota
	// RestoreBSPOnly runs only the boot vCPU (vCPU 0); every secondary is Off. It holds
	// only for a snapshot whose secondaries were all Off when saved (the guest took them
	// offline): a guest that had them online would never learn they are gone, and would
	// wait on their timers and IPIs for ever, so RestoreShape refuses it then.
	RestoreBSPOnly
)

// RestoreShape returns the power states to pass to SetPowerStates after restoring a
// snapshot whose states were saved, or an error (one line, naming the vCPU) when the
// policy cannot hold: RestoreBSPOnly with a secondary saved On or OnPending. An unknown
// policy is an error. Invalid saved values are kept under RestoreSaved, so that
// SetPowerStates rejects them.
func RestoreShape(saved []Power, policy RestorePolicy) ([]Power, error) {
	out := make([]Power, len(saved))
	switch policy {
	case RestoreSaved:
		for i, p := range saved {
			if p == OnPending {
				p = On
			}
			out[i] = p
		}
		return out, nil
	case RestoreBSPOnly:
		for i, p := range saved {
			if i > 0 && (p == On || p == OnPending) {
				return nil, fmt.Errorf("boot_vcpu restores only vCPU 0, but vCPU %d was online when the snapshot was taken (the guest would wait for it for ever): restore with saved, or take the CPU offline in the guest before the snapshot", i)
			}
		}
		for i := range out {
			out[i] = Off
		}
		if len(out) > 0 {
			out[0] = On
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown vCPU restore policy %d", int(policy))
}
