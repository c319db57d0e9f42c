package x86

import (
	"encoding/binary"
	"fmt"

	"kvmstack/vmm/kvm"
	"kvmstack/vmm/memory"
)

// Boot GDT selectors. They match Linux's boot protocol (__BOOT_CS = 0x10,
// __BOOT_DS = 0x18) and its compressed-kernel GDT (__KERNEL32_CS = 0x08,
// TSS at 0x20), so a kernel that reloads a segment from the boot GDT before
// installing its own gets what it expects.
const (
	Code32Selector = 0x08
	Code64Selector = 0x10
	DataSelector   = 0x18
	TSSSelector    = 0x20
)

// GDTSize is the boot GDT in bytes: four 8-byte descriptors and the 16-byte
// long-mode TSS descriptor.
const GDTSize = 0x30

// idtSize covers one (absent) 16-byte gate: the IDT is there only so that
// IDTR holds a sane value; any early exception becomes a triple fault.
const idtSize = 16

// The segments below are the single source for both the GDT bytes and the
// hidden segment state loaded through KVM_SET_SREGS, so the two cannot
// disagree. Limits are in bytes, as KVM takes them.
var (
	code64Segment = kvm.Segment{Base: 0, Limit: 0xFFFF_FFFF, Selector: Code64Selector,
		Type: 0xB, Present: 1, DPL: 0, DB: 0, S: 1, L: 1, G: 1}
	code32Segment = kvm.Segment{Base: 0, Limit: 0xFFFF_FFFF, Selector: Code32Selector,
		Type: 0xB, Present: 1, DPL: 0, DB: 1, S: 1, L: 0, G: 1}
	dataSegment = kvm.Segment{Base: 0, Limit: 0xFFFF_FFFF, Selector: DataSelector,
		Type: 0x3, Present: 1, DPL: 0, DB: 1, S: 1, L: 0, G: 1}
	// A busy TSS: VMX refuses to enter with TR of any other type. Base 0
	// and the minimal limit are enough because the kernel loads its own
	// TSS before the first privilege change could consult this one.
	tssSegment = kvm.Segment{Base: 0, Limit: 0x67, Selector: TSSSelector,
		Type: 0xB, Present: 1, DPL: 0, DB: 0, S: 0, L: 0, G: 0}
	// The LDT as KVM resets it: present, unused.
	ldtSegment = kvm.Segment{Base: 0, Limit: 0xFFFF, Selector: 0, Type: 0x2, Present: 1}
)

// descriptor encodes a segment as a legacy 8-byte GDT descriptor.
func descriptor(s kvm.Segment) uint64 {
	limit := uint64(s.Limit)
	if s.G != 0 {
		limit >>= 12
	}
	access := uint64(s.Type&0xF) | uint64(s.S&1)<<4 | uint64(s.DPL&3)<<5 | uint64(s.Present&1)<<7
	flags := uint64(s.AVL&1) | uint64(s.L&1)<<1 | uint64(s.DB&1)<<2 | uint64(s.G&1)<<3
	base := s.Base
	return limit&0xFFFF |
		(base&0xFF_FFFF)<<16 |
		access<<40 |
		(limit>>16&0xF)<<48 |
		flags<<52 |
		(base>>24&0xFF)<<56
}

// GDT returns the boot GDT's bytes.
func GDT() []byte {
	b := make([]byte, GDTSize)
	binary.LittleEndian.PutUint64(b[Code32Selector:], descriptor(code32Segment))
	binary.LittleEndian.PutUint64(b[Code64Selector:], descriptor(code64Segment))
	binary.LittleEndian.PutUint64(b[DataSelector:], descriptor(dataSegment))
	// A system descriptor in long mode is 16 bytes: the upper half holds
	// base[63:32].
	binary.LittleEndian.PutUint64(b[TSSSelector:], descriptor(tssSegment))
	binary.LittleEndian.PutUint64(b[TSSSelector+8:], tssSegment.Base>>32)
	return b
}

// WriteGDT writes the boot GDT at GDTAddr and an empty IDT at IDTAddr.
func WriteGDT(m *memory.Memory) error {
	if err := m.WriteAt(GDT(), GDTAddr); err != nil {
		return fmt.Errorf("write boot GDT: %w", err)
	}
	if err := m.WriteAt(make([]byte, idtSize), IDTAddr); err != nil {
		return fmt.Errorf("write boot IDT: %w", err)
	}
	return nil
}
