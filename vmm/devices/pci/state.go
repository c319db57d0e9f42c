package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrStateMismatch is wrapped by SetState errors when saved state does not
// fit the device it is applied to (another device model, another vector
// count): the snapshot was taken from a different machine.
var ErrStateMismatch = errors.New("pci: saved state does not match the device")

// ConfigState is what the guest can change in a configuration space: the
// whole register image (the read-only parts are checked on restore, not
// applied) and the BAR addresses.
type ConfigState struct {
	Regs []byte          `json:"regs"`
	BARs [NumBARs]uint32 `json:"bars"`
}

// State returns the registers and BAR addresses.
func (c *ConfigSpace) State() ConfigState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := ConfigState{Regs: append([]byte(nil), c.regs[:]...)}
	for i, b := range c.bars {
		st.BARs[i] = b.addr
	}
	return st
}

// SetState applies st's guest-writable bits and BAR addresses, then runs
// every capability hook and BAR-change callback, as a guest write would, so
// MSI-X routes, notify ioeventfds and bus decoding follow. A read-only byte
// that differs means st belongs to another device: nothing changes.
func (c *ConfigSpace) SetState(st ConfigState) error {
	if len(st.Regs) != ConfigSize {
		return fmt.Errorf("%w: %d-byte configuration space, want %d", ErrStateMismatch, len(st.Regs), ConfigSize)
	}
	c.mu.Lock()
	for o := range ConfigSize {
		if o >= RegBAR0 && o < RegBAR0+4*NumBARs {
			continue
		}
		if (c.regs[o]^st.Regs[o])&^c.wmask[o] != 0 {
			c.mu.Unlock()
			return fmt.Errorf("%w: read-only configuration byte %#x is %#x, saved %#x", ErrStateMismatch, o, c.regs[o], st.Regs[o])
		}
	}
	for i, a := range st.BARs {
		if c.bars[i].size == 0 && a != 0 {
			c.mu.Unlock()
			return fmt.Errorf("%w: saved address %#x for unimplemented BAR %d", ErrStateMismatch, a, i)
		}
	}
	for o := range ConfigSize {
		c.regs[o] = c.regs[o]&^c.wmask[o] | st.Regs[o]&c.wmask[o]
	}
	for i, a := range st.BARs {
		if c.bars[i].size != 0 {
			c.bars[i].addr = a &^ uint32(c.bars[i].size-1)
		}
	}
	hooks := append([]func(){}, c.onBARs...)
	for _, h := range c.hooks {
		hooks = append(hooks, h.fn)
	}
	c.mu.Unlock()
	for _, f := range hooks {
		f()
	}
	return nil
}

// MSIXState is the MSI-X table and pending bits. The enable and mask bits
// live in the configuration space.
type MSIXState struct {
	Table []byte   `json:"table"`
	PBA   []uint64 `json:"pba"`
}

// State returns the table and the pending-bit array.
func (m *MSIX) State() MSIXState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return MSIXState{Table: append([]byte(nil), m.table...), PBA: append([]uint64(nil), m.pba...)}
}

// SetState loads the table and pending bits and re-reads the capability's
// control word, committing the routes of live vectors. Apply it before the
// configuration space's SetState or after: both orders end with the same
// routes.
func (m *MSIX) SetState(st MSIXState) error {
	if len(st.Table) != len(m.table) || len(st.PBA) != len(m.pba) {
		return fmt.Errorf("%w: MSI-X table of %d bytes and %d PBA words, device has %d and %d",
			ErrStateMismatch, len(st.Table), len(st.PBA), len(m.table), len(m.pba))
	}
	m.mu.Lock()
	for v := range m.gsi {
		e := st.Table[v*msixEntrySize:]
		// Only the mask bit of the vector control word exists.
		binary.LittleEndian.PutUint32(e[12:], binary.LittleEndian.Uint32(e[12:])&msixCtrlMasked)
	}
	copy(m.table, st.Table)
	copy(m.pba, st.PBA)
	for v := range m.routed {
		m.routed[v] = false
	}
	m.mu.Unlock()
	m.controlWritten()
	return nil
}

// BusState is bus 0's configuration address latch and every slot's
// configuration space (nil for an empty slot).
type BusState struct {
	ConfigAddress uint32         `json:"config_address"`
	Slots         []*ConfigState `json:"slots"`
}

// State returns the latch and every function's configuration space.
func (b *Bus) State() BusState {
	st := BusState{ConfigAddress: b.cf8.Load(), Slots: make([]*ConfigState, numSlots)}
	for i := range numSlots {
		if d := b.device(uint64(i)); d != nil {
			cs := d.Config().State()
			st.Slots[i] = &cs
		}
	}
	return st
}

// SetState restores every slot's configuration space; the slots must hold
// the same devices as when st was taken.
func (b *Bus) SetState(st BusState) error {
	if len(st.Slots) != numSlots {
		return fmt.Errorf("%w: %d slots saved, bus has %d", ErrStateMismatch, len(st.Slots), numSlots)
	}
	for i, cs := range st.Slots {
		d := b.device(uint64(i))
		if (d == nil) != (cs == nil) {
			return fmt.Errorf("%w: slot %d occupied now %v, saved %v", ErrStateMismatch, i, d != nil, cs != nil)
		}
		if d == nil {
			continue
		}
		if err := d.Config().SetState(*cs); err != nil {
			return fmt.Errorf("slot %d: %w", i, err)
		}
	}
	b.cf8.Store(st.ConfigAddress &^ 3)
	return nil
}
