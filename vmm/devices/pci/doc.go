// Package pci owns PCI bus 0 of a vmm guest: the host bridge, type-0
// configuration spaces (BAR sizing and programming, capability lists),
// configuration access through ports 0xCF8/0xCFC and through ECAM, BAR
// placement in the 32-bit MMIO window and dispatch of BAR accesses, MSI-X
// tables with their pending-bit arrays, and the KVM GSI routing table that
// carries MSI routes next to the default irqchip routes. Everything a guest
// writes to configuration space or an MSI-X table is untrusted: registers
// keep only their writable bits, and no value can make a device address
// memory outside its BARs.
package pci
