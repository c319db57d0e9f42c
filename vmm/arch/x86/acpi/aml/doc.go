// Package aml encodes the small subset of ACPI Machine Language the VMM's
// DSDT needs: names and scopes, devices, methods returning constants,
// integers, strings, packages, buffers, EISA IDs and resource templates
// (I/O ports, IRQs, address-space windows, fixed memory). It only writes
// AML, never interprets it; the output is a TermList the acpi package
// wraps in a table header.
package aml
