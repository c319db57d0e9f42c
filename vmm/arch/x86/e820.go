package x86

import (
	"encoding/binary"
	"slices"

	"kvmstack/vmm/memory"
)

// E820 memory types, as in the kernel's asm/e820/types.h.
const (
	E820RAM      uint32 = 1
	E820Reserved uint32 = 2
	E820ACPI     uint32 = 3
)

// E820EntrySize is the marshalled size of an entry: the kernel's
// struct boot_e820_entry is packed.
const E820EntrySize = 20

// E820Entry is one entry of the BIOS memory map handed to the kernel in
// boot_params.e820_table (and, converted, in the PVH memmap).
type E820Entry struct {
	Addr uint64
	Size uint64
	Type uint32
}

// MarshalBinary encodes the entry as the kernel's packed boot_e820_entry.
func (e E820Entry) MarshalBinary() ([]byte, error) {
	b := make([]byte, E820EntrySize)
	binary.LittleEndian.PutUint64(b[0:], e.Addr)
	binary.LittleEndian.PutUint64(b[8:], e.Size)
	binary.LittleEndian.PutUint32(b[16:], e.Type)
	return b, nil
}

// E820 derives the memory map from the RAM ranges memory.Plan returns: low
// RAM up to EBDAStart, the legacy area to 1 MiB reserved (EBDA, VGA, the ACPI
// tables at ACPITablesAddr, the BIOS area), RAM from 1 MiB to the end of low
// RAM, the ECAM window reserved (Linux refuses MMCONFIG that is not reserved
// in e820 or by ACPI), then RAM above 4 GiB. Entries come sorted by address.
func E820(ram []memory.Range) []E820Entry {
	var out []E820Entry
	add := func(start, end memory.GuestAddr, typ uint32) {
		if end > start {
			out = append(out, E820Entry{Addr: uint64(start), Size: uint64(end - start), Type: typ})
		}
	}
	for _, r := range ram {
		// The legacy megabyte is cut out of whatever range covers it.
		add(r.Start, min(r.End(), EBDAStart), E820RAM)
		add(max(r.Start, HighMemStart), r.End(), E820RAM)
	}
	add(EBDAStart, HighMemStart, E820Reserved)
	add(ECAMAddr, ECAMAddr+ECAMSize, E820Reserved)
	slices.SortFunc(out, func(a, b E820Entry) int {
		switch {
		case a.Addr < b.Addr:
			return -1
		case a.Addr > b.Addr:
			return 1
		}
		return 0
	})
	return out
}
