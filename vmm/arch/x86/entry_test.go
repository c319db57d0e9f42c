package x86

import (
	"testing"

	"kvmstack/vmm/kvm"
)

// resetSregs is the relevant part of what KVM_GET_SREGS returns after vCPU
// creation.
func resetSregs() kvm.Sregs {
	return kvm.Sregs{
		CS:       kvm.Segment{Base: 0xFFFF_0000, Limit: 0xFFFF, Selector: 0xF000, Type: 0xB, Present: 1, S: 1},
		CR0:      0x6000_0010,
		APICBase: 0xFEE0_0900,
	}
}

func TestLongModeSregs(t *testing.T) {
	s := resetSregs()
	LongModeSregs(&s)
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"CR0", s.CR0, 0x8000_0033},
		{"CR3", s.CR3, uint64(PML4Addr)},
		{"CR4", s.CR4, 0x20},
		{"EFER", s.EFER, 0x500},
		{"GDT.Base", s.GDT.Base, uint64(GDTAddr)},
		{"GDT.Limit", uint64(s.GDT.Limit), GDTSize - 1},
		{"IDT.Base", s.IDT.Base, uint64(IDTAddr)},
		{"APICBase kept", s.APICBase, 0xFEE0_0900},
		{"CS.Selector", uint64(s.CS.Selector), 0x10},
		{"CS.L", uint64(s.CS.L), 1},
		{"CS.DB", uint64(s.CS.DB), 0},
		{"SS.Selector", uint64(s.SS.Selector), 0x18},
		{"DS.Selector", uint64(s.DS.Selector), 0x18},
		{"TR.Selector", uint64(s.TR.Selector), 0x20},
		{"TR.Type", uint64(s.TR.Type), 0xB},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	if s.CR0&(1<<29|1<<30) != 0 {
		t.Errorf("CR0 %#x keeps CD/NW from reset", s.CR0)
	}
	checkSegmentsMatchGDT(t, &s)
}

func TestProtectedModeSregs(t *testing.T) {
	s := resetSregs()
	LongModeSregs(&s) // whatever came before must not leak into PVH state
	ProtectedModeSregs(&s)
	if s.CR0 != CR0PE|CR0ET || s.CR4 != 0 || s.EFER != 0 || s.CR3 != 0 {
		t.Errorf("CR0 %#x CR3 %#x CR4 %#x EFER %#x; want PE|ET, 0, 0, 0", s.CR0, s.CR3, s.CR4, s.EFER)
	}
	if s.CS.Selector != Code32Selector || s.CS.DB != 1 || s.CS.L != 0 {
		t.Errorf("CS = %+v, want 32-bit code at %#x", s.CS, Code32Selector)
	}
	checkSegmentsMatchGDT(t, &s)
}

// checkSegmentsMatchGDT decodes each loaded selector from the GDT bytes and
// compares with the hidden state KVM receives: a mismatch would make a
// segment reload change the guest's mode.
func checkSegmentsMatchGDT(t *testing.T, s *kvm.Sregs) {
	t.Helper()
	gdt := GDT()
	for name, seg := range map[string]kvm.Segment{"CS": s.CS, "DS": s.DS, "ES": s.ES, "FS": s.FS, "GS": s.GS, "SS": s.SS, "TR": s.TR} {
		d := uint64(0)
		for i := 7; i >= 0; i-- {
			d = d<<8 | uint64(gdt[int(seg.Selector)+i])
		}
		if got := descriptor(seg); got != d {
			t.Errorf("%s: GDT descriptor %#016x, state encodes as %#016x", name, d, got)
		}
	}
}

func TestEntryRegs(t *testing.T) {
	r := LongModeRegs(0x100_0200, uint64(ZeroPageAddr))
	if r.RIP != 0x100_0200 || r.RSI != uint64(ZeroPageAddr) || r.RFLAGS != 2 || r.RSP != uint64(BootStackTop) {
		t.Errorf("LongModeRegs = %+v", r)
	}
	if r.RSP%16 != 0 {
		t.Errorf("RSP %#x not 16-byte aligned", r.RSP)
	}
	p := PVHRegs(0x100_0000)
	if p.RIP != 0x100_0000 || p.RBX != uint64(PVHStartInfoAddr) || p.RFLAGS != 2 || p.RSI != 0 {
		t.Errorf("PVHRegs = %+v", p)
	}
}
