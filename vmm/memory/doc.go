// Package memory owns guest RAM: anonymous host mappings split around the
// 32-bit MMIO hole, the GuestAddr type, and bounds-checked access to guest
// physical addresses. Every address that comes from a guest is hostile, so
// every accessor here checks it against the regions before touching memory.
// Together with vmm/kvm, this is the only package allowed to use unsafe.
package memory
