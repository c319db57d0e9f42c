package acpi

import (
	"errors"
	"fmt"

	"kvmstack/vmm/arch/x86"
	"kvmstack/vmm/memory"
)

// MaxCPUs is the most vCPUs the MADT describes: xAPIC IDs are 8 bits, 0xFF
// is the broadcast ID and processor UID 0xFF means "all processors" in the
// local APIC NMI entry. More would need x2APIC entries.
const MaxCPUs = 254

// ErrCPUs is wrapped when Config.CPUs is out of range.
var ErrCPUs = errors.New("vCPU count out of range")

// ErrTooLarge is wrapped when the tables do not fit in the BIOS area.
var ErrTooLarge = errors.New("ACPI tables do not fit")

// Window is a span of addresses (memory or I/O ports) a host bridge
// forwards to its bus.
type Window struct {
	Base, Size uint64
}

// End is the first address past the window.
func (w Window) End() uint64 { return w.Base + w.Size }

// PCIHostBridge describes the root PCI bus as the DSDT and MCFG present it.
type PCIHostBridge struct {
	// ECAM is the base of enhanced configuration space for bus 0.
	ECAM memory.GuestAddr
	// EndBus is the last bus number behind the bridge (ECAM covers
	// EndBus+1 MiB).
	EndBus uint8
	// MMIO32 is the window for 32-bit memory BARs; it must end at or
	// below 4 GiB.
	MMIO32 Window
	// MMIO64 is an optional window for 64-bit BARs (Size 0: none).
	MMIO64 Window
	// IO lists the I/O port windows for I/O BARs and legacy devices.
	IO []Window
}

// InterruptOverride is a MADT interrupt source override: ISA IRQ Source
// arrives on GSI with the given MPS INTI flags (polarity bits 0-1, trigger
// mode bits 2-3).
type InterruptOverride struct {
	Source uint8
	GSI    uint32
	Flags  uint16
}

// Config is what the tables describe.
type Config struct {
	// CPUs is the number of vCPUs, 1 to MaxCPUs; vCPU i has APIC ID
	// and processor UID i.
	CPUs int
	// PCI is the host bridge.
	PCI PCIHostBridge
	// Overrides are extra MADT interrupt source overrides. None are
	// needed with KVM's default GSI routing, which maps every GSI below
	// 16 to the PIC input and the IOAPIC pin of the same number (the
	// PIT raises GSI 0 and so IOAPIC pin 0, where Linux looks for it
	// without an override). A VMM that replaces the routing table must
	// keep that identity or describe its change here.
	Overrides []InterruptOverride
	// PVPanic declares the pvpanic device (QEMU0001) at x86.PVPanicPort,
	// so the guest's pvpanic driver reports panics there.
	PVPanic bool
	// PowerButton makes the platform full ACPI instead of hardware-
	// reduced: a FACS, the PM1a event block (PWRBTN_STS/PWRBTN_EN) and
	// control block (SLP_TYP/SLP_EN, where the guest then powers off)
	// on x86.PM1EventPort and x86.PM1ControlPort, the fixed-feature
	// power button, and the SCI on x86.SCIIRQ. Linux's button driver
	// turns a press into an orderly power-off.
	PowerButton bool
}

// SCIOverride is the MADT interrupt source override for the SCI: ISA IRQ 9
// on GSI 9, level-triggered and active high (MPS INTI flags 0b1101), as
// KVM's IOAPIC sees the line vmm drives. Without it Linux assumes the ACPI
// default, active low.
var SCIOverride = InterruptOverride{Source: x86.SCIIRQ, GSI: uint32(x86.SCIIRQ), Flags: 0xD}

// DefaultPCIHostBridge is the bridge of the x86 layout: ECAM for bus 0,
// the 32-bit BAR window below the ECAM, and every I/O port except the
// legacy configuration ports 0xCF8-0xCFF.
func DefaultPCIHostBridge() PCIHostBridge {
	return PCIHostBridge{
		ECAM:   x86.ECAMAddr,
		EndBus: x86.ECAMSize>>20 - 1,
		MMIO32: Window{Base: uint64(x86.PCIMMIOStart), Size: uint64(x86.PCIMMIOEnd - x86.PCIMMIOStart)},
		IO:     []Window{{Base: 0, Size: 0xCF8}, {Base: 0xD00, Size: 0x1_0000 - 0xD00}},
	}
}

// DefaultConfig is the configuration for cpus vCPUs on the x86 layout,
// with the pvpanic device and the ACPI power button (and so its SCI
// override).
func DefaultConfig(cpus int) Config {
	return Config{CPUs: cpus, PCI: DefaultPCIHostBridge(), PVPanic: true, PowerButton: true,
		Overrides: []InterruptOverride{SCIOverride}}
}

func (c Config) validate() error {
	if c.CPUs < 1 || c.CPUs > MaxCPUs {
		return fmt.Errorf("%w: %d vCPUs, want 1 to %d (more need x2APIC MADT entries)", ErrCPUs, c.CPUs, MaxCPUs)
	}
	p := c.PCI
	if p.MMIO32.Size == 0 || p.MMIO32.End() > 1<<32 || p.MMIO32.End() < p.MMIO32.Base {
		return fmt.Errorf("PCI 32-bit window [%#x, +%#x): must be non-empty and below 4 GiB", p.MMIO32.Base, p.MMIO32.Size)
	}
	if p.MMIO64.Size != 0 && p.MMIO64.End() <= p.MMIO64.Base {
		return fmt.Errorf("PCI 64-bit window [%#x, +%#x) wraps", p.MMIO64.Base, p.MMIO64.Size)
	}
	for _, w := range p.IO {
		if w.Size == 0 || w.End() > 0x1_0000 {
			return fmt.Errorf("PCI I/O window [%#x, +%#x): must be non-empty and below 0x10000", w.Base, w.Size)
		}
	}
	if p.ECAM == 0 || uint64(p.ECAM)%(1<<20) != 0 {
		return fmt.Errorf("PCI ECAM base %#x: must be a non-zero multiple of 1 MiB", uint64(p.ECAM))
	}
	return nil
}
