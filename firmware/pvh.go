package firmware

import (
	"encoding/binary"
	"fmt"

	"kvmstack/vmm/arch/x86"
	"kvmstack/vmm/memory"
)

// struct hvm_start_info and its tables (xen/include/public/arch-x86/hvm/
// start_info.h), laid out in the page at x86.PVHStartInfoAddr: the start info
// first, the module list (the initrd) at +0x40, the memory map at +0x80.
const (
	pvhMagic        = 0x336ec578 // XEN_HVM_START_MAGIC_VALUE
	pvhVersion      = 1          // version 1 carries the memory map
	pvhInfoSize     = 0x38
	pvhModlistOff   = 0x40
	pvhModEntrySize = 32
	pvhMemmapOff    = 0x80
	pvhMemEntrySize = 24
	pvhPageSize     = 0x1000
	// pvhMemmapMax matches the zero page's 128 entries; the page would
	// hold 165.
	pvhMemmapMax = 128
)

// startInfoPage builds the page at x86.PVHStartInfoAddr.
func (bp BootParams) startInfoPage() []byte {
	base := uint64(x86.PVHStartInfoAddr)
	page := make([]byte, pvhMemmapOff+len(bp.E820)*pvhMemEntrySize)
	le := binary.LittleEndian
	le.PutUint32(page[0x00:], pvhMagic)
	le.PutUint32(page[0x04:], pvhVersion)
	// flags (0x08) stay 0: no SIF_* applies to a domU-like guest.
	if bp.InitrdSize > 0 {
		le.PutUint32(page[0x0c:], 1)
		le.PutUint64(page[0x10:], base+pvhModlistOff)
		mod := page[pvhModlistOff:]
		le.PutUint64(mod[0x00:], uint64(bp.InitrdAddr))
		le.PutUint64(mod[0x08:], bp.InitrdSize)
		// cmdline_paddr and reserved stay 0.
	}
	le.PutUint64(page[0x18:], uint64(x86.CmdlineAddr))
	le.PutUint64(page[0x20:], uint64(bp.RSDP))
	le.PutUint64(page[0x28:], base+pvhMemmapOff)
	le.PutUint32(page[0x30:], uint32(len(bp.E820)))
	for i, e := range bp.E820 {
		ent := page[pvhMemmapOff+i*pvhMemEntrySize:]
		le.PutUint64(ent[0x00:], e.Addr)
		le.PutUint64(ent[0x08:], e.Size)
		// The hvm_memmap types are the e820 types.
		le.PutUint32(ent[0x10:], e.Type)
	}
	return page
}

// WritePVHStartInfo writes struct hvm_start_info, one module for the initrd
// and the memory map at x86.PVHStartInfoAddr, and the command line at
// x86.CmdlineAddr, for the PVH entry (EBX points at it).
func WritePVHStartInfo(m *memory.Memory, bp BootParams) error {
	if err := bp.validate(m, pvhMemmapMax); err != nil {
		return err
	}
	page := bp.startInfoPage()
	if len(page) > pvhPageSize {
		return fmt.Errorf("PVH start info: %d bytes, room for %d", len(page), pvhPageSize)
	}
	if err := m.WriteAt(page, x86.PVHStartInfoAddr); err != nil {
		return fmt.Errorf("PVH start info at %#x: %w", uint64(x86.PVHStartInfoAddr), err)
	}
	return writeCmdline(m, bp.Cmdline)
}

// Compile-time checks: the largest memory map fits in the page, and the page
// ends before the zero page (a negative constant does not convert to uint).
const (
	_ = uint(pvhPageSize - (pvhMemmapOff + pvhMemmapMax*pvhMemEntrySize))
	_ = uint64(x86.ZeroPageAddr - x86.PVHStartInfoAddr - pvhPageSize)
)
