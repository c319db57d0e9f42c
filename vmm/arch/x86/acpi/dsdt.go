package acpi

import (
	"fmt"

	"kvmstack/vmm/arch/x86"
	"kvmstack/vmm/arch/x86/acpi/aml"
)

// COM1 as the DSDT declares it; vmm/devices puts the 8250 there.
const (
	com1Port = 0x3F8
	com1IRQ  = 4
)

// dsdt holds \_S5 (soft-off through the FADT sleep control register), COM1,
// the PCI host bridge with its windows and INTx routing (_PRT), a motherboard resource device
// reserving the ECAM window (Linux checks ECAM against ACPI reservations as
// well as e820), and the pvpanic device if configured.
func dsdt(c Config) ([]byte, error) {
	p := c.PCI
	crs := []aml.Resource{
		aml.WordBusNumber(0, uint16(p.EndBus)),
		aml.IO(0xCF8, 0xCF8, 1, 8), // the bridge's own configuration ports
	}
	for _, w := range p.IO {
		crs = append(crs, aml.WordIO(uint16(w.Base), uint16(w.End()-1)))
	}
	crs = append(crs, aml.DWordMemory(uint32(p.MMIO32.Base), uint32(p.MMIO32.End()-1), false))
	if p.MMIO64.Size != 0 {
		crs = append(crs, aml.QWordMemory(p.MMIO64.Base, p.MMIO64.End()-1, true))
	}
	ecamSize := (uint32(p.EndBus) + 1) << 20
	devices := []aml.Object{
		aml.Device("COM1",
			aml.Name("_HID", aml.EISAIDObject("PNP0501")),
			aml.Name("_UID", aml.Integer(1)),
			aml.Name("_CRS", aml.ResourceTemplate(aml.IO(com1Port, com1Port, 0, 8), aml.IRQNoFlags(com1IRQ))),
		),
		aml.Device("PCI0",
			aml.Name("_HID", aml.EISAIDObject("PNP0A08")),
			aml.Name("_CID", aml.EISAIDObject("PNP0A03")),
			aml.Name("_UID", aml.Integer(0)),
			aml.Name("_SEG", aml.Integer(0)),
			aml.Name("_BBN", aml.Integer(0)),
			aml.Name("_CRS", aml.ResourceTemplate(crs...)),
			aml.Name("_PRT", prt()),
		),
		aml.Device("MRES",
			aml.Name("_HID", aml.EISAIDObject("PNP0C02")),
			aml.Name("_UID", aml.Integer(0)),
			aml.Name("_CRS", aml.ResourceTemplate(aml.Memory32Fixed(uint32(p.ECAM), ecamSize, false))),
		),
	}
	if c.PVPanic {
		devices = append(devices, aml.Device("PEVT",
			aml.Name("_HID", aml.String("QEMU0001")),
			aml.Name("_CRS", aml.ResourceTemplate(aml.IO(x86.PVPanicPort, x86.PVPanicPort, 1, 1))),
		))
	}
	body, err := aml.Encode(
		aml.Name(`\_S5`, aml.Package(aml.Integer(x86.S5SleepType), aml.Integer(0), aml.Integer(0), aml.Integer(0))),
		aml.Scope(`\_SB`, devices...),
	)
	if err != nil {
		return nil, fmt.Errorf("DSDT: %w", err)
	}
	// Revision 2: integers are 64 bits wide.
	return finish(append(sdt("DSDT", 2), body...)), nil
}
