// Package acpi builds the ACPI tables a guest finds at boot: the RSDP, the
// XSDT, a hardware-reduced FADT (sleep and reset registers on the ports of
// the x86 layout), the MADT that brings up every vCPU (Debian's kernel has
// no MP-table parser), the MCFG for the PCI Express configuration window,
// and a DSDT with \_S5, COM1, the PCI host bridge and its windows. Write
// places them all in the legacy BIOS area from x86.ACPITablesAddr.
package acpi
