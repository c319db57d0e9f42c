// Package vmm owns one virtual machine: it turns a Config into a Machine
// (guest RAM, KVM VM and vCPUs, in-kernel irqchip and PIT, the legacy
// devices, ACPI tables and a loaded Linux kernel), runs one goroutine per
// vCPU on a locked OS thread, and decodes every exit into a typed value that
// a pure handler routes to the devices. The guest's own end (power-off,
// reset, panic, triple fault) or the host's request to stop ends Run with an
// Outcome.
package vmm
