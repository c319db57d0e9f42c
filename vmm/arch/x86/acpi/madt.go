package acpi

import (
	"encoding/binary"

	"kvmstack/vmm/arch/x86"
)

// MADT entry types.
const (
	madtLocalAPIC      = 0
	madtIOAPIC         = 1
	madtSourceOverride = 2
	madtLocalAPICNMI   = 4
)

const (
	madtPCATCompat     = 1 << 0 // dual 8259s present: Linux masks them
	lapicEnabled       = 1 << 0
	allProcessors      = 0xFF
	ioapicID           = 0 // KVM's in-kernel IOAPIC resets to ID 0
	lint1              = 1
	madtLocalAPICLen   = 8
	madtIOAPICLen      = 12
	madtOverrideLen    = 10
	madtLocalAPICNMILn = 6
)

// madt lists one enabled local APIC per vCPU (UID and APIC ID i), the
// in-kernel IOAPIC with GSI base 0, the configured source overrides, and
// LINT1 as NMI on every processor, matching x86.SetLocalInterrupts.
func madt(c Config) []byte {
	b := sdt("APIC", 5)
	b = binary.LittleEndian.AppendUint32(b, uint32(x86.LAPICAddr))
	b = binary.LittleEndian.AppendUint32(b, madtPCATCompat)
	for i := range c.CPUs {
		b = append(b, madtLocalAPIC, madtLocalAPICLen, byte(i), byte(i))
		b = binary.LittleEndian.AppendUint32(b, lapicEnabled)
	}
	b = append(b, madtIOAPIC, madtIOAPICLen, ioapicID, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(x86.IOAPICAddr))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, o := range c.Overrides {
		b = append(b, madtSourceOverride, madtOverrideLen, 0 /* ISA */, o.Source)
		b = binary.LittleEndian.AppendUint32(b, o.GSI)
		b = binary.LittleEndian.AppendUint16(b, o.Flags)
	}
	b = append(b, madtLocalAPICNMI, madtLocalAPICNMILn, allProcessors, 0, 0, lint1)
	return finish(b)
}
