package kvm

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"unsafe"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func TestAlignedBuf(t *testing.T) {
	for _, n := range []int{1, 4, 8, 9, 4096, 4100} {
		b := alignedBuf(n)
		if len(b) != n {
			t.Errorf("alignedBuf(%d) has length %d", n, len(b))
		}
		if p := uintptr(unsafe.Pointer(&b[0])); p%8 != 0 {
			t.Errorf("alignedBuf(%d) at %#x, not 8-byte aligned", n, p)
		}
	}
	if alignedBuf(0) != nil {
		t.Error("alignedBuf(0) is not nil")
	}
}

func TestMarshalCPUID2(t *testing.T) {
	in := []CPUIDEntry2{
		{Function: 0, EAX: 0xd, EBX: 0x756e6547},
		{Function: 7, Index: 0, Flags: CPUIDFlagSignificantIndex, EBX: 0x1234, EDX: 0xdead},
	}
	buf, err := marshalCPUID2(in)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if len(buf) != 8+2*40 || le.Uint32(buf) != 2 || le.Uint32(buf[4:]) != 0 {
		t.Fatalf("header: len %d nent %d pad %d", len(buf), le.Uint32(buf), le.Uint32(buf[4:]))
	}
	// Second entry: function at 48, flags at 56, ebx at 64, edx at 72.
	if le.Uint32(buf[48:]) != 7 || le.Uint32(buf[56:]) != 1 || le.Uint32(buf[64:]) != 0x1234 || le.Uint32(buf[72:]) != 0xdead {
		t.Fatalf("entry 1 bytes wrong: % x", buf[48:88])
	}
	out, err := unmarshalCPUID2(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip: %+v", out)
	}
	// The kernel shrinks nent to what it filled.
	le.PutUint32(buf, 1)
	if out, _ = unmarshalCPUID2(buf); len(out) != 1 || out[0] != in[0] {
		t.Fatalf("nent=1: %+v", out)
	}
	le.PutUint32(buf, 3)
	if _, err := unmarshalCPUID2(buf); err == nil {
		t.Fatal("nent beyond the buffer accepted")
	}
	if _, err := unmarshalCPUID2(buf[:7]); err == nil {
		t.Fatal("short header accepted")
	}
	if _, err := marshalCPUID2(make([]CPUIDEntry2, maxCPUIDEntries+1)); err == nil {
		t.Fatal("oversized table accepted")
	}
}

func TestMarshalMSRs(t *testing.T) {
	in := []MSREntry{{Index: 0x174, Data: 0x10}, {Index: 0xc0000080, Data: 0x500}}
	buf, err := marshalMSRs(in)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if len(buf) != 8+32 || le.Uint32(buf) != 2 || le.Uint32(buf[24:]) != 0xc0000080 || le.Uint64(buf[32:]) != 0x500 {
		t.Fatalf("bytes: % x", buf)
	}
	le.PutUint64(buf[16:], 0x99) // kernel fills entry 0's data
	out := make([]MSREntry, 2)
	unmarshalMSRs(buf, out)
	if out[0].Data != 0x99 || out[1] != in[1] {
		t.Fatalf("unmarshal: %+v", out)
	}
}

func TestUnmarshalMSRList(t *testing.T) {
	buf := alignedBuf(4 + 3*4)
	le := binary.LittleEndian
	le.PutUint32(buf, 3)
	le.PutUint32(buf[4:], 0x10)
	le.PutUint32(buf[8:], 0x1b)
	le.PutUint32(buf[12:], 0xc0000080)
	got, err := unmarshalMSRList(buf)
	if err != nil || !reflect.DeepEqual(got, []uint32{0x10, 0x1b, 0xc0000080}) {
		t.Fatalf("got %x, %v", got, err)
	}
	le.PutUint32(buf, 4)
	if _, err := unmarshalMSRList(buf); err == nil {
		t.Fatal("count beyond the buffer accepted")
	}
}

// TestVarlenGolden pins the exact bytes handed to KVM_SET_GSI_ROUTING and
// KVM_SET_CPUID2 for a representative table. Run with -update to rewrite.
func TestVarlenGolden(t *testing.T) {
	routes := []IRQRoutingEntry{
		NewIRQRoutingIRQChip(0, IRQRoutingIRQChip{IRQChip: IRQChipPICMaster, Pin: 0}),
		NewIRQRoutingIRQChip(4, IRQRoutingIRQChip{IRQChip: IRQChipIOAPIC, Pin: 4}),
		NewIRQRoutingMSI(24, IRQRoutingMSI{AddressLo: 0xfee00000, Data: 0x4041}),
	}
	rb, err := marshalIRQRouting(routes)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := marshalCPUID2([]CPUIDEntry2{{Function: 1, EAX: 0x906ea, ECX: 0x80000000, EDX: 0x078bfbff}})
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	got.WriteString("kvm_irq_routing\n" + hex.Dump(rb) + "kvm_cpuid2\n" + hex.Dump(cb))
	path := filepath.Join("testdata", "varlen.golden")
	if *update {
		if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("bytes differ from %s:\n%s\nwant:\n%s", path, got.Bytes(), want)
	}
}

func TestIRQRoutingEntryAccessors(t *testing.T) {
	m := IRQRoutingMSI{AddressLo: 0xfee01000, AddressHi: 1, Data: 0x31, DevID: 5}
	e := NewIRQRoutingMSI(30, m)
	if e.GSI != 30 || e.Type != IRQRoutingTypeMSI {
		t.Fatalf("entry %+v", e)
	}
	if got, ok := e.MSI(); !ok || got != m {
		t.Fatalf("MSI() = %+v, %v", got, ok)
	}
	if _, ok := e.IRQChip(); ok {
		t.Fatal("MSI entry decoded as irqchip")
	}
	c := NewIRQRoutingIRQChip(9, IRQRoutingIRQChip{IRQChip: IRQChipIOAPIC, Pin: 9})
	if got, ok := c.IRQChip(); !ok || got.IRQChip != IRQChipIOAPIC || got.Pin != 9 {
		t.Fatalf("IRQChip() = %+v, %v", got, ok)
	}
	if _, ok := c.MSI(); ok {
		t.Fatal("irqchip entry decoded as MSI")
	}
}

func TestIRQChipUnion(t *testing.T) {
	var c IRQChip
	s := IOAPICState{BaseAddress: 0xfec00000, IORegSel: 0x10, ID: 1, IRR: 0x4}
	s.RedirTbl[0] = 1 << 16
	s.RedirTbl[23] = 0xff00000000000031
	c.SetIOAPIC(s)
	le := binary.LittleEndian
	// Member offsets inside kvm_ioapic_state: redirtbl at 24, 8 bytes each.
	if le.Uint64(c.Chip[0:]) != 0xfec00000 || le.Uint64(c.Chip[24:]) != 1<<16 || le.Uint64(c.Chip[24+23*8:]) != 0xff00000000000031 {
		t.Fatalf("IOAPIC bytes wrong: % x", c.Chip[:40])
	}
	if got := c.IOAPIC(); got != s {
		t.Fatalf("IOAPIC round trip: %+v", got)
	}
	p := PICState{IRR: 1, IMR: 0xfb, IRQBase: 0x20, ELCR: 0x0c, ELCRMask: 0xf8}
	c.SetPIC(p)
	if c.Chip[1] != 1 || c.Chip[2] != 0xfb || c.Chip[5] != 0x20 || c.Chip[14] != 0x0c || c.Chip[15] != 0xf8 {
		t.Fatalf("PIC bytes wrong: % x", c.Chip[:16])
	}
	if got := c.PIC(); got != p {
		t.Fatalf("PIC round trip: %+v", got)
	}
}

func TestLAPICReg32(t *testing.T) {
	var l LAPICState
	if !l.SetReg32(0x350, 0x700) {
		t.Fatal("SetReg32(LVT0) refused")
	}
	if l.Regs[0x351] != 0x07 {
		t.Fatalf("LVT0 bytes % x", l.Regs[0x350:0x354])
	}
	if v, ok := l.Reg32(0x350); !ok || v != 0x700 {
		t.Fatalf("Reg32 = %#x, %v", v, ok)
	}
	for _, off := range []int{-4, 0x3fe, 0x400, 0x351} {
		if l.SetReg32(off, 1) {
			t.Errorf("SetReg32(%#x) accepted", off)
		}
		if _, ok := l.Reg32(off); ok {
			t.Errorf("Reg32(%#x) accepted", off)
		}
	}
}
