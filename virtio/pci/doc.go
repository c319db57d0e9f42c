// Package pci owns the virtio-pci modern transport (virtio 1.2 section 4.1):
// one PCI function per virtio device, with the common, notify, ISR and
// device-specific configuration structures in memory BAR 0 next to the MSI-X
// table and pending-bit array. It negotiates features, runs the device
// status state machine, builds the virtqueues when the driver sets
// DRIVER_OK, turns queue notifications into Kicks (through an ioeventfd per
// queue, or an MMIO exit when KVM refuses one) and delivers used-buffer and
// configuration interrupts through MSI-X (GSI routes + irqfds) or INTx.
package pci
