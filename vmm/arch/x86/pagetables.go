package x86

import (
	"encoding/binary"
	"fmt"

	"kvmstack/vmm/memory"
)

// Page-table entry bits used by the boot tables.
const (
	ptePresent  = 1 << 0
	pteWritable = 1 << 1
	ptePageSize = 1 << 7 // a 2 MiB page in a page directory
)

const (
	pageSize    = 0x1000
	largePage   = 2 << 20
	entriesPer  = 512
	pageTablesN = 2 + PDCount // PML4, PDPT, page directories
)

// PageTables returns the identity map of the first 4 GiB with 2 MiB pages:
// the PML4 at PML4Addr, then the PDPT and the PDCount page directories, one
// page each, in that order. The kernel's own startup code builds its tables
// within microseconds; until then the loader, boot_params, the kernel and
// the initrd must all be reachable, and 4 GiB covers all of low RAM.
func PageTables() []byte {
	b := make([]byte, pageTablesN*pageSize)
	pml4 := b[0:pageSize]
	pdpt := b[pageSize : 2*pageSize]
	binary.LittleEndian.PutUint64(pml4, uint64(PDPTAddr)|ptePresent|pteWritable)
	for i := range PDCount {
		pdAddr := uint64(PDAddr) + uint64(i)*pageSize
		binary.LittleEndian.PutUint64(pdpt[8*i:], pdAddr|ptePresent|pteWritable)
		pd := b[(2+i)*pageSize : (3+i)*pageSize]
		for j := range entriesPer {
			phys := (uint64(i)*entriesPer + uint64(j)) * largePage
			binary.LittleEndian.PutUint64(pd[8*j:], phys|ptePresent|pteWritable|ptePageSize)
		}
	}
	return b
}

// WritePageTables writes PageTables at PML4Addr. It writes whole pages, so
// stale bytes from an earlier boot of the same memory cannot leak entries.
func WritePageTables(m *memory.Memory) error {
	if err := m.WriteAt(PageTables(), PML4Addr); err != nil {
		return fmt.Errorf("write boot page tables: %w", err)
	}
	return nil
}
