package pci

import (
	"fmt"
	"sync"
)

// INTx routing. Each slot's four interrupt pins are swizzled over the eight
// IOAPIC inputs above the ISA range, GSI 16–23, the way the DSDT's _PRT
// (vmm/arch/x86/acpi) tells the guest: pin P of slot S drives GSI
// 16 + (S+P) mod 8. Linux takes a _PRT GSI as level-triggered, active-low
// and shareable, so the line is the wired-OR of every function on it; KVM's
// IOAPIC ignores the polarity bit, so "asserted" is level 1 on KVM_IRQ_LINE.
const (
	// INTxFirstGSI is the first GSI that INTx pins are routed to.
	INTxFirstGSI = 16
	// INTxGSIs is how many GSIs the pins are spread over.
	INTxGSIs = 8
	// INTxPins is the number of interrupt pins a function may use (A–D).
	INTxPins = 4
	// Slots is the number of device slots on bus 0 (slot 0 is the host bridge).
	Slots = numSlots
)

// INTxGSI is the GSI that interrupt pin (0 = INTA# … 3 = INTD#) of slot is
// wired to.
func INTxGSI(slot, pin int) uint32 {
	return uint32(INTxFirstGSI + (slot+pin)%INTxGSIs)
}

// IRQLiner sets the level of a GSI (KVM_IRQ_LINE); *kvm.VM implements it.
type IRQLiner interface {
	IRQLine(irq uint32, level bool) error
}

// intxLines counts, per GSI, the pins that assert it: the GSI is high while
// any of them is.
type intxLines struct {
	mu       sync.Mutex
	asserted map[uint32]int
}

// INTxPin is one function's interrupt pin on a shared level-triggered line.
// Its methods are safe for concurrent use.
type INTxPin struct {
	lines *intxLines
	gsi   uint32
	high  bool // guarded by lines.mu
}

// GSI is the line the pin drives.
func (p *INTxPin) GSI() uint32 { return p.gsi }

// Set asserts or deasserts the pin. The line changes level (through vm) only
// when the first pin on it rises or the last one falls, so a function that
// deasserts never lowers a line another function still holds up. Setting
// the level the pin already has does nothing.
func (p *INTxPin) Set(vm IRQLiner, level bool) error {
	p.lines.mu.Lock()
	defer p.lines.mu.Unlock()
	if level == p.high {
		return nil
	}
	n := p.lines.asserted[p.gsi]
	if level {
		n++
	} else {
		n--
	}
	p.high = level
	p.lines.asserted[p.gsi] = n
	if (level && n == 1) || (!level && n == 0) {
		if err := vm.IRQLine(p.gsi, level); err != nil {
			return fmt.Errorf("pci: INTx GSI %d to %v: %w", p.gsi, level, err)
		}
	}
	return nil
}

// Asserted reports whether the pin is asserted.
func (p *INTxPin) Asserted() bool {
	p.lines.mu.Lock()
	defer p.lines.mu.Unlock()
	return p.high
}
