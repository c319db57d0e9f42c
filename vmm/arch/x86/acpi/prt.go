package acpi

import (
	"kvmstack/vmm/arch/x86/acpi/aml"
	pcibus "kvmstack/vmm/devices/pci"
)

// prt is the host bridge's _PRT (ACPI 6.5, 6.2.13): for every slot and
// interrupt pin, the GSI the pin is wired to, exactly as vmm/devices/pci
// drives it. Entries name no link device (Source Zero), so the GSI is an
// IOAPIC input that Linux programs level-triggered, active-low and
// shareable. Without a _PRT, Linux finds no GSI for INTx ("PCI INT A: no
// GSI") and a guest without MSI-X (pci=nomsi) has no device interrupts.
func prt() aml.Object {
	var entries []aml.Object
	for slot := 1; slot < pcibus.Slots; slot++ { // slot 0, the host bridge, has no pin
		for pin := range pcibus.INTxPins {
			entries = append(entries, aml.Package(
				aml.Integer(uint64(slot)<<16|0xFFFF), // _ADR form: any function of the slot
				aml.Integer(uint64(pin)),
				aml.Integer(0), // Source: none, the last element is a GSI
				aml.Integer(uint64(pcibus.INTxGSI(slot, pin))),
			))
		}
	}
	return aml.Package(entries...)
}
