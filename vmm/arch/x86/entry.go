package x86

import "kvmstack/vmm/kvm"

// Control-register and EFER bits for the entry state.
const (
	CR0PE = 1 << 0  // protected mode
	CR0MP = 1 << 1  // monitor coprocessor
	CR0ET = 1 << 4  // extension type (hard-wired to 1 on modern CPUs)
	CR0NE = 1 << 5  // native x87 error reporting
	CR0PG = 1 << 31 // paging

	CR4PAE = 1 << 5

	EFERLME = 1 << 8  // long mode enable
	EFERLMA = 1 << 10 // long mode active
)

// RFLAGS bit 1 is reserved and always set; every other flag starts clear,
// interrupts included.
const rflagsFixed = 0x2

// LongModeSregs sets s up for the Linux 64-bit boot protocol: paging on with
// the identity tables at PML4Addr, long mode active, flat 64-bit code at
// __BOOT_CS and flat data at __BOOT_DS, TR on the boot TSS descriptor, GDTR
// and IDTR on the boot tables. Fields the protocol leaves alone (APIC base,
// the interrupt bitmap, CR8) keep the values KVM_GET_SREGS returned; CR0 is
// set whole, so the reset value's CD and NW (caches off) do not survive.
func LongModeSregs(s *kvm.Sregs) {
	s.CS = code64Segment
	s.DS, s.ES, s.FS, s.GS, s.SS = dataSegment, dataSegment, dataSegment, dataSegment, dataSegment
	s.TR = tssSegment
	s.LDT = ldtSegment
	s.GDT = kvm.DTable{Base: uint64(GDTAddr), Limit: GDTSize - 1}
	s.IDT = kvm.DTable{Base: uint64(IDTAddr), Limit: idtSize - 1}
	s.CR0 = CR0PE | CR0MP | CR0ET | CR0NE | CR0PG
	s.CR2 = 0
	s.CR3 = uint64(PML4Addr)
	s.CR4 = CR4PAE
	s.EFER = EFERLME | EFERLMA
}

// ProtectedModeSregs sets s up for the PVH entry: 32-bit flat protected
// mode with paging off, as the Xen PVH ABI requires (CS a 32-bit flat code
// segment, DS/ES/SS flat data, TR a busy TSS, CR4 and EFER clear). The
// code segment is the boot GDT's __KERNEL32_CS, so a reload from the GDT
// keeps the same meaning.
func ProtectedModeSregs(s *kvm.Sregs) {
	s.CS = code32Segment
	s.DS, s.ES, s.FS, s.GS, s.SS = dataSegment, dataSegment, dataSegment, dataSegment, dataSegment
	s.TR = tssSegment
	s.LDT = ldtSegment
	s.GDT = kvm.DTable{Base: uint64(GDTAddr), Limit: GDTSize - 1}
	s.IDT = kvm.DTable{Base: uint64(IDTAddr), Limit: idtSize - 1}
	s.CR0 = CR0PE | CR0ET
	s.CR2 = 0
	s.CR3 = 0
	s.CR4 = 0
	s.EFER = 0
}

// LongModeRegs is the register state for the 64-bit boot protocol: RIP at
// the kernel's 64-bit entry, RSI at boot_params, a small valid stack.
func LongModeRegs(entry, bootParams uint64) kvm.Regs {
	return kvm.Regs{
		RIP:    entry,
		RSI:    bootParams,
		RSP:    uint64(BootStackTop),
		RBP:    uint64(BootStackTop),
		RFLAGS: rflagsFixed,
	}
}

// PVHRegs is the register state for the PVH entry: EIP at the ELF note's
// entry point and EBX at the hvm_start_info.
func PVHRegs(entry uint64) kvm.Regs {
	return kvm.Regs{
		RIP:    entry,
		RBX:    uint64(PVHStartInfoAddr),
		RSP:    uint64(BootStackTop),
		RBP:    uint64(BootStackTop),
		RFLAGS: rflagsFixed,
	}
}
