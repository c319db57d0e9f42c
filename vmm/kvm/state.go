package kvm

import (
	"fmt"
	"unsafe"
)

// DebugRegs mirrors struct kvm_debugregs (KVM_GET_DEBUGREGS /
// KVM_SET_DEBUGREGS): DR0-DR3, DR6 and DR7 as the guest last left them.
// Snapshots carry them because a guest debugger (kgdb, perf's hardware
// breakpoints) keeps state there that regs and sregs do not cover.
type DebugRegs struct {
	DB       [4]uint64
	DR6      uint64
	DR7      uint64
	Flags    uint64
	Reserved [9]uint64
}

var (
	kvmGetDebugRegs = ior(0xa1, unsafe.Sizeof(DebugRegs{}))
	kvmSetDebugRegs = iow(0xa2, unsafe.Sizeof(DebugRegs{}))
)

// GetDebugRegs is KVM_GET_DEBUGREGS.
func (v *VCPU) GetDebugRegs() (DebugRegs, error) {
	var d DebugRegs
	if _, err := ioctlPtr(v.fd, kvmGetDebugRegs, unsafe.Pointer(&d)); err != nil {
		return DebugRegs{}, fmt.Errorf("KVM_GET_DEBUGREGS: %w", err)
	}
	return d, nil
}

// SetDebugRegs is KVM_SET_DEBUGREGS. KVM refuses a non-zero Flags.
func (v *VCPU) SetDebugRegs(d DebugRegs) error {
	if _, err := ioctlPtr(v.fd, kvmSetDebugRegs, unsafe.Pointer(&d)); err != nil {
		return fmt.Errorf("KVM_SET_DEBUGREGS: %w", err)
	}
	return nil
}
