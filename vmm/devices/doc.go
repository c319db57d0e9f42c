// Package devices owns the legacy platform devices of a vmm guest and the
// buses that route port I/O and MMIO exits to them: the 8250 UART on COM1,
// the i8042 controller (only as far as the reset line), the ACPI
// hardware-reduced sleep and reset registers, and the pvpanic port. Each
// device is safe for concurrent use by several vCPU threads and treats every
// value the guest writes as untrusted.
package devices
