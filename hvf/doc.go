// Package hvf is squib's Hypervisor.framework backend for Apple silicon Macs.
// It implements hv.Hypervisor with Apple's in-framework GICv3, bound
// without cgo through github.com/ebitengine/purego.
//
// # Requirements
//
// An Apple silicon Mac running macOS 15 or later (hv_gic_create and the GIC
// state API are macOS 15 additions; Open says what is missing on an older
// macOS), not itself a VM without nested virtualization, and an executable
// signed with the entitlements of entitlements.plist:
// com.apple.security.hypervisor, and com.apple.security.cs.allow-jit, which
// the hardened runtime requires to run guest code from a file-backed
// mapping such as a restored VM's MAP_PRIVATE RAM. Go's linker signs
// darwin/arm64 binaries ad hoc but without entitlements, so after every
// build:
//
//	GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 go build -o squibd ./cmd/squibd
//	codesign --force --sign - --entitlements entitlements.plist squibd
//
// An unsigned binary fails in hv_vm_create with HV_DENIED or HV_UNSUPPORTED;
// the error wraps ErrNotEntitled and carries that codesign command.
//
// # Design
//
// Only ffi_darwin_arm64_unsafe.go and simd_darwin_arm64.s touch purego or
// unsafe; they bind every C function once with Dlsym, so a missing symbol is
// an error, never a crash. hv_vcpu_set_simd_fp_reg takes a 128-bit vector in
// V0, which purego cannot pass, so a three-instruction assembly trampoline
// loads it (see the .s file).
//
// The framework makes one VM per process and binds each vCPU to the thread
// that created it. squib's core runs each vCPU on its own locked goroutine
// (package hv); VCPU methods assume they run there, except Kick
// (hv_vcpus_exit). The GIC must exist before the first vCPU, so NewVM creates
// it, at the addresses of package gic, after checking the framework's sizes,
// alignments, SPI range and timer INTIDs against that layout; Ready checks
// where the framework put each vCPU's redistributor.
//
// Exits are decoded from the ESR_EL2-format syndrome by pure code
// (decodeExit, in files without build tags, tested on any host): data aborts
// outside RAM become MMIO exits, HVC and SMC hypercalls, WFI a bounded sleep;
// trapped MSR/MRS (read as zero, writes ignored), WFE, dirty-page faults and
// virtual-timer exits are handled inside Run. The PC moves past the trapped
// instruction after SMC, MMIO, MSR/MRS and WFx, never after HVC, whose exit
// already points past it.
//
// A new vCPU's ID registers are rewritten (hv_vcpu_set_sys_reg; the vCPU
// configuration's feature registers can only be read) with the features
// whose state squib cannot save cleared: SVE, SME and MTE (sanitizeIDReg).
//
// For snapshots, VCPU implements hv.StateVCPU and VM hv.StateVM. The
// vCPU's state includes the ten pointer-authentication key halves and the
// CPU model: MIDR_EL1 and the other ID registers the framework can read
// (CTR_EL0, CLIDR_EL1 and DCZID_EL0 from the vCPU configuration). A
// restore compares those with the new vCPU's before writing anything and
// refuses another CPU model (snapshot.CheckIDRegs); it never writes them.
// SaveState also reads the vCPU's GIC CPU-interface (ICC) registers, which
// only its own thread can, and VM.SaveGIC returns them with the framework's
// opaque GIC blob (tagged with the macOS version); VM.RestoreGIC loads the
// blob and leaves each vCPU's ICC registers for it to write on its thread
// before it first runs. The guest counter is one vtimer offset for all vCPUs
// (VM.GuestCounter/SetGuestCounter), starting at the VM's creation so the
// guest counter starts near 0. VM.TrackDirty/CollectDirty/StopDirtyTracking
// write-protect RAM with hv_vm_protect and record pages as the guest faults
// on them, reported per block of the size TrackDirty was given. The pieces
// remain available: VCPU.SIMD/SetSIMD (V0-V31), VCPU.SaveICC/RestoreICC.
//
// # Tests on a Mac
//
// The tests of pure logic run anywhere. boot_darwin_arm64_test.go boots the
// lab guest through package vmm with 1 and 2 vCPUs;
// snapshot_darwin_arm64_test.go runs the lab's snapshot scenarios (full and
// diff snapshots of a running workload, merge, restore mapped and copied,
// two clone processes side by side); blk_darwin_arm64_test.go boots the
// guest from its ext4 root drive and restores a disk loop's snapshot onto a
// copy of the image; net_darwin_arm64_test.go runs the Mac's networking,
// virtio-vsock over Unix sockets (TestVsockEcho: 8 host streams at once
// echoed, 1 MiB each, through Firecracker's hybrid-vsock handshake, and a
// guest-initiated stream to the socket's _5001) and virtio-net on the
// user-mode network (TestUserNetFetch: DHCP lease, DNS, 1 MiB fetched from
// the host's loopback through the NAT, a published port to the guest's
// httpd; a tap is Linux only); pauth_darwin_arm64_test.go signs a pointer
// in a tiny guest and authenticates it after restoring the vCPU in another
// process. All but the last need the guest's Image and initrd.gz, and the
// root drive tests rootfs.ext4.gz too (lab/build-kernel.sh,
// lab/build-initrd.sh and lab/build-rootfs.sh build them on Debian or
// Ubuntu; copy them to the Mac); all need a test binary signed with
// entitlements.plist, which go test's -exec wrapper
// testdata/codesign-exec.sh takes care of. From the repository root:
//
//	SQUIB_GUEST_IMAGE=/path/to/Image SQUIB_GUEST_INITRD=/path/to/initrd.gz \
//	  SQUIB_GUEST_ROOTFS=/path/to/rootfs.ext4.gz \
//	  go test -exec "$PWD/hvf/testdata/codesign-exec.sh" -v ./hvf/
//
// Without the variables, on macOS before 15, or unsigned, the tests skip
// with one line saying why. Run them one package at a time: a process may
// hold only one VM.
//
// # Facts that need a Mac
//
// The backend follows hvf.md, but these facts are taken from documentation
// and other projects and have not been observed on a Mac yet; the darwin
// tests check all but the third:
//
//   - The ten pointer-authentication key registers (APIAKEYLO/HI_EL1 to
//     APGAKEYLO/HI_EL1) read and write through hv_vcpu_get/set_sys_reg, the
//     guest may use PACIA/AUTIA and set its keys without trapping, and keys
//     restored into a fresh vCPU authenticate pointers the old one signed
//     (TestPointerAuth).
//   - hv_vcpu_set_sys_reg accepts new values for ID_AA64PFR0/PFR1_EL1 (and
//     ZFR0/SMFR0 from macOS 15.2) before the vCPU first runs, and the guest
//     then reads the masked values: no SVE, SME or MTE (TestPointerAuth).
//   - Under the hardened runtime, guest code in file-backed MAP_PRIVATE RAM
//     (a restored VM's) runs only with com.apple.security.cs.allow-jit
//     (reported for libkrun, peers-2026.md §2.3). squib's ad-hoc signature
//     does not turn the hardened runtime on (no --options runtime), so
//     TestSnapshotScenarios, which restores mapped RAM, cannot tell; a
//     Developer ID build signed with the hardened runtime must.
//   - MIDR_EL1 and the other ID registers read the same on every vCPU of
//     one Mac, whichever core (performance or efficiency, which differ in
//     MIDR_EL1) created it, the guest reads what hv_vcpu_get_sys_reg and
//     the default vCPU configuration report, and a restore with a
//     different MIDR_EL1 is refused before anything is written
//     (TestPointerAuth; TestSnapshotScenarios restores on the same Mac).
package hvf
