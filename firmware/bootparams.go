package firmware

import (
	"encoding/binary"
	"errors"
	"fmt"

	"kvmstack/vmm/arch/x86"
	"kvmstack/vmm/memory"
)

// Offsets in struct boot_params (arch/x86/include/uapi/asm/bootparam.h) that
// are not part of the setup header.
const (
	zeroPageSize      = 4096
	bpACPIRSDPAddr    = 0x070
	bpExtRamdiskImage = 0x0c0
	bpExtRamdiskSize  = 0x0c4
	bpExtCmdLinePtr   = 0x0c8
	bpE820Entries     = 0x1e8
	bpE820Table       = 0x2d0
	bpE820Max         = 128 // E820_MAX_ENTRIES_ZEROPAGE
)

// Values written into every setup header.
const (
	loaderTypeUndefined = 0xff   // type_of_loader: "undefined" boot loader
	vidModeNormal       = 0xffff // vid_mode: NORMAL_VGA, "don't ask"
	// heapEndPtr follows boot.rst's example for protocol >= 2.02; only
	// the real-mode setup code uses it, which a 64-bit entry skips.
	heapEndPtr = 0xde00
	// elfHeaderVersion and elfKernelAlign fill the header of an ELF
	// kernel, which has none of its own: protocol 2.15 and the 16 MiB
	// alignment x86-64 Linux declares (as Firecracker does).
	elfHeaderVersion = 0x020f
	elfKernelAlign   = 0x0100_0000
)

// BootParams is what the kernel is told at entry, for either entry mode.
type BootParams struct {
	// Kernel is the loaded kernel (its setup header and limits).
	Kernel *Kernel
	// Cmdline is the kernel command line, without the NUL.
	Cmdline string
	// InitrdAddr and InitrdSize locate the initrd; size 0 means none.
	InitrdAddr memory.GuestAddr
	InitrdSize uint64
	// E820 is the memory map (x86.E820 of the RAM ranges).
	E820 []x86.E820Entry
	// RSDP is the ACPI RSDP's guest address; 0 lets Linux scan for it.
	RSDP memory.GuestAddr
}

// validate checks what both boot structures share against guest RAM.
func (bp BootParams) validate(m *memory.Memory, maxE820 int) error {
	if bp.Kernel == nil {
		return errors.New("boot params: no kernel")
	}
	if err := checkCmdline(bp.Cmdline, bp.Kernel); err != nil {
		return fmt.Errorf("boot params: %w", err)
	}
	if len(bp.E820) == 0 || len(bp.E820) > maxE820 {
		return fmt.Errorf("boot params: %w: %d entries, want 1 to %d", ErrE820, len(bp.E820), maxE820)
	}
	if bp.InitrdSize > 0 {
		if _, err := m.Slice(bp.InitrdAddr, bp.InitrdSize); err != nil {
			return fmt.Errorf("boot params: initrd: %w", err)
		}
		if max := bp.Kernel.InitrdAddrMax; max != 0 && uint64(bp.InitrdAddr)+bp.InitrdSize-1 > max {
			return fmt.Errorf("boot params: initrd [%#x,+%#x) %w: above the kernel's initrd_addr_max %#x",
				uint64(bp.InitrdAddr), bp.InitrdSize, ErrNoRoom, max)
		}
	}
	return nil
}

// zeroPage builds struct boot_params: the kernel's setup header (or, for an
// ELF kernel, the minimal one Linux needs), overridden with what the boot
// loader owns, plus the e820 table and the RSDP.
func (bp BootParams) zeroPage() ([]byte, error) {
	k := bp.Kernel
	zp := make([]byte, zeroPageSize)
	le := binary.LittleEndian
	if k.Setup != nil {
		if len(k.Setup) > hdrRoomEnd-hdrSetupSects {
			return nil, fmt.Errorf("boot params: setup header of %d bytes, room for %d", len(k.Setup), hdrRoomEnd-hdrSetupSects)
		}
		copy(zp[hdrSetupSects:], k.Setup)
	} else {
		le.PutUint16(zp[hdrBootFlag:], bootFlagMagic)
		copy(zp[hdrHeader:], hdrMagic)
		le.PutUint16(zp[hdrVersion:], elfHeaderVersion)
		zp[hdrLoadflags] = loadedHigh
		le.PutUint32(zp[hdrKernelAlign:], elfKernelAlign)
		le.PutUint32(zp[hdrInitrdAddrMax:], uint32(min(k.InitrdAddrMax, 0xffff_ffff)))
		le.PutUint32(zp[hdrCmdlineSize:], k.CmdlineSize)
	}
	le.PutUint16(zp[hdrVidMode:], vidModeNormal)
	zp[hdrTypeOfLoader] = loaderTypeUndefined
	zp[hdrLoadflags] |= canUseHeap
	le.PutUint16(zp[hdrHeapEndPtr:], heapEndPtr)
	le.PutUint32(zp[hdrCmdLinePtr:], uint32(x86.CmdlineAddr))
	le.PutUint32(zp[bpExtCmdLinePtr:], uint32(uint64(x86.CmdlineAddr)>>32))
	le.PutUint32(zp[hdrRamdiskImage:], uint32(bp.InitrdAddr))
	le.PutUint32(zp[bpExtRamdiskImage:], uint32(uint64(bp.InitrdAddr)>>32))
	le.PutUint32(zp[hdrRamdiskSize:], uint32(bp.InitrdSize))
	le.PutUint32(zp[bpExtRamdiskSize:], uint32(bp.InitrdSize>>32))
	le.PutUint64(zp[bpACPIRSDPAddr:], uint64(bp.RSDP))
	zp[bpE820Entries] = byte(len(bp.E820))
	for i, e := range bp.E820 {
		off := bpE820Table + i*x86.E820EntrySize
		le.PutUint64(zp[off:], e.Addr)
		le.PutUint64(zp[off+8:], e.Size)
		le.PutUint32(zp[off+16:], e.Type)
	}
	return zp, nil
}

// WriteBootParams writes struct boot_params at x86.ZeroPageAddr and the
// command line at x86.CmdlineAddr, for the 64-bit entry (RSI points at it).
func WriteBootParams(m *memory.Memory, bp BootParams) error {
	if err := bp.validate(m, bpE820Max); err != nil {
		return err
	}
	zp, err := bp.zeroPage()
	if err != nil {
		return err
	}
	if err := m.WriteAt(zp, x86.ZeroPageAddr); err != nil {
		return fmt.Errorf("boot params at %#x: %w", uint64(x86.ZeroPageAddr), err)
	}
	return writeCmdline(m, bp.Cmdline)
}
