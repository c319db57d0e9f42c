package x86

import (
	"testing"

	"kvmstack/vmm/memory"
)

func TestPageTablesGolden(t *testing.T) {
	checkGolden(t, "pagetables.bin", PageTables())
}

// walk translates a virtual address through the tables the way the MMU
// does with 4-level paging, to check the map's meaning rather than bytes.
func walk(t *testing.T, m *memory.Memory, va uint64) (uint64, bool) {
	t.Helper()
	entry := func(table, idx uint64) uint64 {
		v, err := m.Uint64(memory.GuestAddr(table + 8*idx))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	const addrMask = 0x000F_FFFF_FFFF_F000
	e := entry(uint64(PML4Addr), va>>39&511)
	if e&ptePresent == 0 {
		return 0, false
	}
	e = entry(e&addrMask, va>>30&511)
	if e&ptePresent == 0 {
		return 0, false
	}
	e = entry(e&addrMask, va>>21&511)
	if e&ptePresent == 0 || e&ptePageSize == 0 || e&pteWritable == 0 {
		return 0, false
	}
	return e&addrMask&^(largePage-1) | va&(largePage-1), true
}

func TestPageTablesIdentity(t *testing.T) {
	m, err := memory.New(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := WritePageTables(m); err != nil {
		t.Fatal(err)
	}
	for _, va := range []uint64{0, 0x1000, uint64(KernelLoadAddr) + 0x1234, 0x3FFF_FFFF, 0x4000_0000,
		uint64(memory.HoleStart) - 1, uint64(ECAMAddr), uint64(LAPICAddr) + 0x20, 0xFFFF_FFFF} {
		pa, ok := walk(t, m, va)
		if !ok || pa != va {
			t.Errorf("walk(%#x) = %#x, %v; want identity", va, pa, ok)
		}
	}
	for _, va := range []uint64{1 << 32, 1 << 39} {
		if pa, ok := walk(t, m, va); ok {
			t.Errorf("walk(%#x) = %#x, want unmapped", va, pa)
		}
	}
}

func TestWritePageTablesTooSmall(t *testing.T) {
	// Memory always holds the first megabyte, so the only failure is a
	// memory that does not contain PML4Addr at all: an empty Memory.
	if err := WritePageTables(&memory.Memory{}); err == nil {
		t.Fatal("WritePageTables on empty memory: want error")
	}
	if err := WriteGDT(&memory.Memory{}); err == nil {
		t.Fatal("WriteGDT on empty memory: want error")
	}
}
