package pci

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"kvmstack/vmm/kvm"
)

// In-kernel irqchip IDs of KVM's routing entries (KVM_IRQCHIP_*).
const (
	irqchipPICMaster = 0
	irqchipPICSlave  = 1
	irqchipIOAPIC    = 2
)

// Routing limits: GSIs below FirstMSIGSI belong to the PIC and IOAPIC pins;
// KVM accepts at most MaxGSI routes (KVM_MAX_IRQ_ROUTES).
const (
	FirstMSIGSI = 24
	MaxGSI      = 4096
)

// ErrNoGSI is returned when every GSI has been handed out.
var ErrNoGSI = errors.New("pci: no free GSI")

// RoutingTable is the KVM call the router needs; *kvm.VM implements it.
type RoutingTable interface {
	SetGSIRouting(entries []kvm.IRQRoutingEntry) error
}

// GSIRouter owns the VM's GSI routing table. KVM_SET_GSI_ROUTING replaces
// the whole table, so the router always writes KVM's default irqchip routes
// (GSI 0-15 to the PIC input and the IOAPIC pin of the same number, 16-23 to
// the IOAPIC) and then the MSI routes it hands out. The MADT and the
// legacy devices rely on that identity (see acpi.Config.Overrides).
type GSIRouter struct {
	mu   sync.Mutex
	vm   RoutingTable
	next uint32
	msi  map[uint32]kvm.IRQRoutingMSI
}

// NewGSIRouter returns a router writing through vm. It does not touch the
// table until the first MSI route is set.
func NewGSIRouter(vm RoutingTable) *GSIRouter {
	return &GSIRouter{vm: vm, next: FirstMSIGSI, msi: map[uint32]kvm.IRQRoutingMSI{}}
}

// DefaultRoutes are KVM's initial routes (arch/x86/kvm/irq_comm.c).
func DefaultRoutes() []kvm.IRQRoutingEntry {
	var es []kvm.IRQRoutingEntry
	for gsi := uint32(0); gsi < FirstMSIGSI; gsi++ {
		es = append(es, kvm.NewIRQRoutingIRQChip(gsi, kvm.IRQRoutingIRQChip{IRQChip: irqchipIOAPIC, Pin: gsi}))
		if gsi < 16 {
			chip := uint32(irqchipPICMaster)
			if gsi >= 8 {
				chip = irqchipPICSlave
			}
			es = append(es, kvm.NewIRQRoutingIRQChip(gsi, kvm.IRQRoutingIRQChip{IRQChip: chip, Pin: gsi % 8}))
		}
	}
	return es
}

// Allocate hands out a GSI for an MSI route.
func (r *GSIRouter) Allocate() (uint32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next >= MaxGSI {
		return 0, ErrNoGSI
	}
	g := r.next
	r.next++
	return g, nil
}

// SetMSI routes gsi to the MSI message m and commits the table, unless the
// route is already exactly that.
func (r *GSIRouter) SetMSI(gsi uint32, m kvm.IRQRoutingMSI) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gsi < FirstMSIGSI || gsi >= r.next {
		return fmt.Errorf("pci: GSI %d was not allocated for MSI", gsi)
	}
	if old, ok := r.msi[gsi]; ok && old == m {
		return nil
	}
	r.msi[gsi] = m
	return r.commitLocked()
}

// Entries is the table the router last built (defaults, then MSI routes by
// GSI).
func (r *GSIRouter) Entries() []kvm.IRQRoutingEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.entriesLocked()
}

func (r *GSIRouter) entriesLocked() []kvm.IRQRoutingEntry {
	es := DefaultRoutes()
	gsis := make([]uint32, 0, len(r.msi))
	for g := range r.msi {
		gsis = append(gsis, g)
	}
	slices.Sort(gsis)
	for _, g := range gsis {
		es = append(es, kvm.NewIRQRoutingMSI(g, r.msi[g]))
	}
	return es
}

func (r *GSIRouter) commitLocked() error {
	if err := r.vm.SetGSIRouting(r.entriesLocked()); err != nil {
		return fmt.Errorf("pci: set GSI routing (%d MSI routes): %w", len(r.msi), err)
	}
	return nil
}
