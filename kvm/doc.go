// Package kvm is squib's Linux KVM backend for arm64 hosts. It implements
// hv.Hypervisor: guest RAM as one memory slot, vCPUs whose PSCI calls are
// forwarded to userspace through the SMCCC filter (Linux 6.4+, falling back
// to KVM's in-kernel PSCI on older kernels), and an in-kernel vGICv3.
//
// The backend exists only on linux/arm64; elsewhere the package is empty.
// Every unsafe operation lives in ioctl_unsafe.go.
package kvm
