package x86

import (
	"encoding/binary"
	"testing"

	"kvmstack/vmm/kvm"
	"kvmstack/vmm/memory"
)

func TestGDTGolden(t *testing.T) {
	checkGolden(t, "gdt.bin", GDT())
}

func TestGDTDescriptors(t *testing.T) {
	// The well-known encodings of Linux's boot GDT.
	b := GDT()
	tests := []struct {
		name string
		sel  int
		want uint64
	}{
		{"null", 0, 0},
		{"code32", Code32Selector, 0x00CF_9B00_0000_FFFF},
		{"code64", Code64Selector, 0x00AF_9B00_0000_FFFF},
		{"data", DataSelector, 0x00CF_9300_0000_FFFF},
		{"tssLow", TSSSelector, 0x0000_8B00_0000_0067},
		{"tssHigh", TSSSelector + 8, 0},
	}
	for _, tt := range tests {
		if got := binary.LittleEndian.Uint64(b[tt.sel:]); got != tt.want {
			t.Errorf("%s descriptor = %#016x, want %#016x", tt.name, got, tt.want)
		}
	}
}

func TestDescriptorFields(t *testing.T) {
	tests := []struct {
		name string
		seg  kvm.Segment
		want uint64
	}{
		{"baseSpread", kvm.Segment{Base: 0x12345678, Limit: 0xABCDE, Type: 3, S: 1, Present: 1}, 0x120A_9334_5678_BCDE},
		{"dpl3avl", kvm.Segment{Limit: 0xFFFF_FFFF, G: 1, DPL: 3, AVL: 1, Type: 0xA, S: 1, Present: 1}, 0x009F_FA00_0000_FFFF},
	}
	for _, tt := range tests {
		if got := descriptor(tt.seg); got != tt.want {
			t.Errorf("%s: descriptor = %#016x, want %#016x", tt.name, got, tt.want)
		}
	}
}

func TestWriteGDT(t *testing.T) {
	m, err := memory.New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// Garbage where the IDT goes must be cleared.
	if err := m.PutUint64(IDTAddr, ^uint64(0)); err != nil {
		t.Fatal(err)
	}
	if err := WriteGDT(m); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, GDTSize)
	if err := m.ReadAt(got, GDTAddr); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "gdt.bin", got)
	if v, _ := m.Uint64(IDTAddr); v != 0 {
		t.Errorf("IDT gate = %#x, want 0", v)
	}
	if GDTAddr+GDTSize > IDTAddr {
		t.Errorf("GDT [%#x,+%#x) overlaps IDT at %#x", GDTAddr, GDTSize, IDTAddr)
	}
}
