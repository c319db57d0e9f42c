package x86

import "kvmstack/vmm/memory"

// Boot structures in the first megabyte. They sit below EBDAStart, in RAM the
// e820 map reports as usable: Linux copies boot_params and the command line
// early, and the page tables and GDT are replaced before the kernel frees
// anything, so reporting them as RAM costs nothing and keeps the map simple.
const (
	// GDTAddr holds the boot GDT (null, unused, code64 at 0x10, data at
	// 0x18, a 16-byte long-mode TSS descriptor at 0x20): the selectors
	// Linux's boot protocol expects, 48 bytes in all.
	GDTAddr memory.GuestAddr = 0x500
	// IDTAddr is an empty IDT: the kernel installs its own before it
	// enables interrupts; until then any exception is a triple fault,
	// which the VMM reports as a crash. It follows the GDT (0x520, as
	// first planned, would overlap the TSS descriptor's upper half).
	IDTAddr memory.GuestAddr = 0x530
	// PVHStartInfoAddr holds the hvm_start_info for the PVH entry (EBX).
	PVHStartInfoAddr memory.GuestAddr = 0x6000
	// ZeroPageAddr holds boot_params for the 64-bit entry (RSI).
	ZeroPageAddr memory.GuestAddr = 0x7000
	// PML4Addr is CR3 for the 64-bit entry; the PDPT and four page
	// directories follow it page by page.
	PML4Addr memory.GuestAddr = 0x9000
	// PDPTAddr is the single page-directory-pointer table.
	PDPTAddr memory.GuestAddr = 0xA000
	// PDAddr is the first of four page directories mapping 0–4 GiB.
	PDAddr memory.GuestAddr = 0xB000
	// PDCount page directories of 512 2-MiB entries each cover 4 GiB.
	PDCount = 4
	// BootStackTop is the initial RSP/ESP: the free page between the
	// zero page (4 KiB at 0x7000) and the PML4. Linux switches to its own
	// stack within a few instructions; the value only has to be mapped,
	// writable and 16-byte aligned.
	BootStackTop memory.GuestAddr = 0x8FF0
	// CmdlineAddr holds the NUL-terminated kernel command line.
	CmdlineAddr memory.GuestAddr = 0x20000
	// CmdlineMax is the room at CmdlineAddr, NUL included.
	CmdlineMax = 4096
)

// Legacy areas below 1 MiB.
const (
	// EBDAStart is where usable low RAM ends: the EBDA, the VGA hole, the
	// option-ROM and BIOS areas follow up to HighMemStart and are reserved.
	EBDAStart memory.GuestAddr = 0x9FC00
	// ACPITablesAddr is where the RSDP and then every other ACPI table go;
	// the kernel scans 0xE0000–0xFFFFF for the RSDP on legacy boots.
	ACPITablesAddr memory.GuestAddr = 0xE0000
	// ACPITablesEnd is the first address past the ACPI area.
	ACPITablesEnd memory.GuestAddr = 0x100000
	// HighMemStart is the first byte above the legacy megabyte.
	HighMemStart memory.GuestAddr = 0x100000
	// KernelLoadAddr is where the bzImage protected-mode code is loaded.
	KernelLoadAddr memory.GuestAddr = 0x100000
)

// The 32-bit hole, [memory.HoleStart, memory.HoleEnd).
const (
	// PCIMMIOStart is the start of the 32-bit PCI BAR window.
	PCIMMIOStart memory.GuestAddr = memory.HoleStart
	// PCIMMIOEnd is the first address past the 32-bit PCI BAR window.
	PCIMMIOEnd memory.GuestAddr = 0xE000_0000
	// ECAMAddr is PCI Express enhanced configuration space for bus 0.
	ECAMAddr memory.GuestAddr = 0xE000_0000
	// ECAMSize covers one bus: 32 devices × 8 functions × 4 KiB.
	ECAMSize = 1 << 20
	// IOAPICAddr is the IOAPIC's MMIO base (KVM's in-kernel IOAPIC).
	IOAPICAddr memory.GuestAddr = 0xFEC0_0000
	// LAPICAddr is the local APIC's MMIO base.
	LAPICAddr memory.GuestAddr = 0xFEE0_0000
)

// ACPI fixed hardware, as the FADT describes it and vmm/devices implements it.
// The ports avoid every legacy device Linux probes (PIT, PIC, i8042, UARTs,
// CMOS, PCI config 0xCF8).
const (
	// SleepControlPort is the FADT SLEEP_CONTROL_REG (one byte): writing
	// SLP_EN|SLP_TYP=S5SleepType powers off.
	SleepControlPort uint16 = 0x3c0
	// SleepStatusPort is the FADT SLEEP_STATUS_REG (one byte).
	SleepStatusPort uint16 = 0x3c1
	// ResetPort is the FADT RESET_REG; writing ResetValue resets the VM.
	ResetPort uint16 = 0x3c2
	// PM1EventPort is the FADT PM1a_EVT_BLK: the 16-bit PM1 status
	// register, then the 16-bit PM1 enable register (PWRBTN_STS/EN).
	PM1EventPort uint16 = 0x3c4
	// PM1ControlPort is the FADT PM1a_CNT_BLK (16 bits: SCI_EN, SLP_TYP,
	// SLP_EN), where a full-ACPI guest powers off.
	PM1ControlPort uint16 = 0x3c8
	// SCIIRQ is the ACPI SCI: ISA IRQ and GSI 9, level-triggered, active
	// high (the MADT's interrupt source override says so).
	SCIIRQ uint8 = 9
	// ResetValue is the FADT RESET_VALUE.
	ResetValue uint8 = 0x1
	// S5SleepType is the SLP_TYP of \_S5_ (soft off).
	S5SleepType uint8 = 5
	// PVPanicPort is the pvpanic device's one-byte port (ACPI _HID
	// QEMU0001, QEMU's ISA default), where the guest reports a panic.
	PVPanicPort uint16 = 0x505
)
