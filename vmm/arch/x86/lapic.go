package x86

import "kvmstack/vmm/kvm"

// Local APIC register offsets and LVT delivery modes.
const (
	APICRegLVTLINT0 = 0x350
	APICRegLVTLINT1 = 0x360

	apicDeliveryModeMask = 0x7 << 8
	apicModeNMI          = 0x4 << 8
	apicModeExtINT       = 0x7 << 8
	apicLVTMasked        = 1 << 16
)

// SetLocalInterrupts wires LINT0 as ExtINT (the 8259 PIC's output, through
// which the legacy timer path reaches the BSP) and LINT1 as NMI, unmasked,
// as PC firmware leaves them; the kernel's through-8259A and NMI-watchdog
// checks rely on it. Other bits of the two LVT entries are preserved.
func SetLocalInterrupts(l *kvm.LAPICState) {
	set := func(off int, mode uint32) {
		v, _ := l.Reg32(off)
		v = v&^(apicDeliveryModeMask|apicLVTMasked) | mode
		l.SetReg32(off, v)
	}
	set(APICRegLVTLINT0, apicModeExtINT)
	set(APICRegLVTLINT1, apicModeNMI)
}
