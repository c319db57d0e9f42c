// Package firmware owns everything the VMM does in place of a BIOS before the
// first guest instruction runs: it loads a Linux kernel (an ELF vmlinux, or a
// bzImage, optionally with its compressed payload unpacked on the host so the
// guest never runs its own decompressor), places the initrd, and writes the
// structures Linux reads at entry — boot_params (the "zero page") with the
// e820 map and command line for the 64-bit boot protocol, or hvm_start_info
// for the PVH entry.
//
// Kernel and initrd files are untrusted input: every header field is checked
// against the file and against guest RAM before a single byte is written, and
// decompression is bounded, so a corrupt or hostile file yields an error that
// names the file and the fault, never a panic or a write outside the loaded
// span. The guest kit recipe lives in firmware/kit, a separate package.
package firmware
