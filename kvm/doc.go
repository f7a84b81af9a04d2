// Package kvm is squib's Linux KVM backend for arm64 hosts. It implements
// hv.Hypervisor: guest RAM as one memory slot, vCPUs whose PSCI calls are
// forwarded to userspace through the SMCCC filter (Linux 6.4+, falling back
// to KVM's in-kernel PSCI on older kernels), and an in-kernel vGICv3.
//
// For snapshots VCPU implements hv.StateVCPU (registers through ONE_REG)
// and VM hv.StateVM: the vGICv3's registers through its device attributes,
// kept as (group, attr, value) triples in gic.State.Blob, and dirty-page
// tracking through KVM's dirty log (kvm-arm64.md §1.9-§1.12, §2).
//
// VM also implements hv.DoorbellVM with ioeventfds, so that a virtio
// driver's QueueNotify writes wake the device goroutine without an exit to
// squibd, but only with SQUIB_KVM_IOEVENTFD=on in squibd's environment. The
// lab's BenchmarkBlkLab runs the guest both ways: ioeventfds took a third of
// the MMIO write exits away and made no measurable difference to
// throughput or random-read IOPS there (the exit into nested KVM, not the
// trip on to squibd, is what costs), so the default stays the plain MMIO
// exit, which Hypervisor.framework has too. Interrupts stay KVM_IRQ_LINE
// from the device goroutine: an irqfd would replace that one ioctl with
// one eventfd write, and squib's virtio lines are level, lowered by the
// driver's InterruptACK, which exits anyway.
//
// The backend exists only on linux/arm64; elsewhere the package is empty.
// Every unsafe operation lives in ioctl_unsafe.go.
package kvm
