package acpi

import (
	"fmt"

	"kvmstack/vmm/arch/x86"
	"kvmstack/vmm/memory"
)

// tableAlign keeps every table 16-byte aligned; the RSDP must be, for the
// kernel's scan of the BIOS area.
const tableAlign = 16

// Build lays the tables out for base: the RSDP at base, then the FACS
// (full ACPI only), DSDT, FADT, MADT, MCFG and XSDT, each aligned. It returns the image to copy to base.
func Build(c Config, base memory.GuestAddr) ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("ACPI tables: %w", err)
	}
	d, err := dsdt(c)
	if err != nil {
		return nil, fmt.Errorf("ACPI tables: %w", err)
	}
	ma, mc := madt(c), mcfg(c.PCI)
	var img []byte
	place := func(size int) uint64 {
		off := (len(img) + tableAlign - 1) &^ (tableAlign - 1)
		img = append(img, make([]byte, off+size-len(img))...)
		return uint64(base) + uint64(off)
	}
	put := func(addr uint64, b []byte) { copy(img[addr-uint64(base):], b) }
	rsdpAddr := place(rsdpSize)
	var facsAddr uint64
	if c.PowerButton {
		// The FACS needs 64-byte alignment: pad to it first.
		img = append(img, make([]byte, (facsAlign-(uint64(base)+uint64(len(img)))%facsAlign)%facsAlign)...)
		facsAddr = place(facsSize)
	}
	dsdtAddr := place(len(d))
	fadtAddr := place(fadtSize)
	madtAddr := place(len(ma))
	mcfgAddr := place(len(mc))
	tables := []uint64{fadtAddr, madtAddr, mcfgAddr}
	x := xsdt(tables)
	xsdtAddr := place(len(x))
	put(dsdtAddr, d)
	if c.PowerButton {
		put(facsAddr, facs())
	}
	put(fadtAddr, fadt(c, dsdtAddr, facsAddr))
	put(madtAddr, ma)
	put(mcfgAddr, mc)
	put(xsdtAddr, x)
	put(rsdpAddr, rsdp(xsdtAddr))
	return img, nil
}

// Write builds the tables for c and writes them at x86.ACPITablesAddr,
// returning the RSDP's address for boot_params.acpi_rsdp_addr or the PVH
// start info. The tables must fit below x86.ACPITablesEnd, in the area
// the e820 map reserves.
func Write(m *memory.Memory, c Config) (memory.GuestAddr, error) {
	img, err := Build(c, x86.ACPITablesAddr)
	if err != nil {
		return 0, err
	}
	if room := uint64(x86.ACPITablesEnd - x86.ACPITablesAddr); uint64(len(img)) > room {
		return 0, fmt.Errorf("%w: %d bytes, room for %d", ErrTooLarge, len(img), room)
	}
	if err := m.WriteAt(img, x86.ACPITablesAddr); err != nil {
		return 0, fmt.Errorf("write ACPI tables: %w", err)
	}
	return x86.ACPITablesAddr, nil
}
