// Package kvm owns kvmstack's access to the Linux KVM API: the /dev/kvm
// system handle, VM and vCPU file descriptors, the mmap'd kvm_run page, and
// Go structs that mirror the kernel's x86-64 uapi layout byte for byte.
//
// It is, with vmm/memory, one of the two packages allowed to use unsafe.
// Everything here is a thin, typed layer: one method per ioctl, every error
// wrapped with the ioctl's name. Exit decoding (DecodeExit) works on a plain
// byte slice so that the VMM's exit handling can be tested on fabricated
// kvm_run pages without /dev/kvm.
package kvm
