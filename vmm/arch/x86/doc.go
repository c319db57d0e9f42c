// Package x86 owns the x86-64 machine description a guest boots into: the
// guest physical layout (layout.go) every other table derives from, the e820
// map, the long-mode and PVH entry state (GDT, identity page tables, control
// registers, segments), the boot MSRs, CPUID shaping for each vCPU including
// the host profile of an emulating KVM, and the local APIC's LINT wiring. The
// ACPI tables live in the acpi subpackage.
package x86
