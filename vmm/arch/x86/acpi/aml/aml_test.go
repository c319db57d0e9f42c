package aml

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func mustEncode(t *testing.T, objs ...Object) []byte {
	t.Helper()
	b, err := Encode(objs...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMatchesIASL compares a DSDT body with what iasl 20200925 compiled
// from the equivalent ASL (the table header removed):
//
//	Name (_S5, Package (0x04) { 0x05, Zero, Zero, Zero })
//	Scope (\_SB) {
//	  Device (COM1) { Name (_HID, EisaId ("PNP0501")) Name (_UID, One)
//	    Name (_CRS, ResourceTemplate () { IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08) IRQNoFlags () {4} }) }
//	  Device (PCI0) { Name (_HID, EisaId ("PNP0A08")) Name (_CID, EisaId ("PNP0A03"))
//	    Name (STRX, "kvmstack") Method (_STA, 0, NotSerialized) { Return (0x0F) }
//	    Name (_CRS, ResourceTemplate () {
//	      WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0, 0, 1,,,)
//	      WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, 0x0D00, 0xFFFF, 0, 0xF300,,,, TypeStatic, DenseTranslation)
//	      DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0, 0xC0000000, 0xDFFFFFFF, 0, 0x20000000,,,, AddressRangeMemory, TypeStatic)
//	      QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite, 0, 0x8000000000, 0xFFFFFFFFFF, 0, 0x8000000000,,,, AddressRangeMemory, TypeStatic)
//	      Memory32Fixed (ReadWrite, 0xE0000000, 0x00100000, ) }) } }
//	Name (\_SB.PCI0.VAL, 0x12345678)
//	Name (BIG, 0x123456789A)
func TestMatchesIASL(t *testing.T) {
	const iasl = "085f53355f1207040a0500000010480e5f53425f5b822b434f4d31085f4849440c41d00501085f55494401085f43525311100a0d4701f803f803000822100079005b82430b50434930085f4849440c41d00a08085f4349440c41d00a0308535452580d6b766d737461636b0014095f53544100a40a0f085f435253114a070a76880d00020c0000000000000000000100880d00010c030000000dffff000000f3871700000c0100000000000000c0ffffffdf00000000000000208a2b00000c0300000000000000000000000080000000ffffffffff0000000000000000000000000000008000000086090001000000e0000010007900082f035f53425f5043493056414c5f0c78563412084249475f0e9a78563412000000"
	want, err := hex.DecodeString(iasl)
	if err != nil {
		t.Fatal(err)
	}
	got := mustEncode(t,
		Name("_S5", Package(Integer(5), Integer(0), Integer(0), Integer(0))),
		// iasl drops the root prefix of names at the root: "\_SB" is
		// "_SB" there, so the test spells them that way.
		Scope("_SB",
			Device("COM1",
				Name("_HID", EISAIDObject("PNP0501")),
				Name("_UID", Integer(1)),
				Name("_CRS", ResourceTemplate(IO(0x3F8, 0x3F8, 0, 8), IRQNoFlags(4))),
			),
			Device("PCI0",
				Name("_HID", EISAIDObject("PNP0A08")),
				Name("_CID", EISAIDObject("PNP0A03")),
				Name("STRX", String("kvmstack")),
				Method("_STA", 0, false, Return(Integer(0xF))),
				Name("_CRS", ResourceTemplate(
					WordBusNumber(0, 0),
					WordIO(0x0D00, 0xFFFF),
					DWordMemory(0xC000_0000, 0xDFFF_FFFF, false),
					QWordMemory(0x80_0000_0000, 0xFF_FFFF_FFFF, true),
					Memory32Fixed(0xE000_0000, 1<<20, true),
				)),
			),
		),
		Name("_SB.PCI0.VAL", Integer(0x1234_5678)),
		Name("BIG", Integer(0x12_3456_789A)),
	)
	if !bytes.Equal(got, want) {
		t.Fatalf("AML differs from iasl's:\n got %x\nwant %x", got, want)
	}
}

func TestPkgLength(t *testing.T) {
	tests := []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x01}},
		{62, []byte{0x3F}},
		{63, []byte{0x41, 0x04}},         // 65 = 0x41
		{4093, []byte{0x4F, 0xFF}},       // 4095
		{4094, []byte{0x81, 0x00, 0x01}}, // 4097 = 0x1001
		{1<<20 - 4, []byte{0x8F, 0xFF, 0xFF}},
		{1<<20 - 3, []byte{0xC1, 0x00, 0x00, 0x01}},
	}
	for _, tt := range tests {
		got, err := pkgLength(tt.n)
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("pkgLength(%d) = % x, %v; want % x", tt.n, got, err, tt.want)
		}
	}
	if _, err := pkgLength(1 << 28); !errors.Is(err, ErrInvalid) {
		t.Errorf("pkgLength(1<<28) error = %v, want ErrInvalid", err)
	}
}

func TestLargePackage(t *testing.T) {
	// A body over 63 bytes takes a two-byte PkgLength: the length must
	// count both bytes.
	var elems []Object
	for i := range 30 {
		elems = append(elems, Integer(0x100+i)) // 3 bytes each
	}
	b := mustEncode(t, Package(elems...))
	if b[0] != packageOp {
		t.Fatalf("opcode %#x", b[0])
	}
	length := int(b[1]&0xF) | int(b[2])<<4
	if b[1]>>6 != 1 || length != len(b)-1 {
		t.Fatalf("PkgLength % x says %d, package is %d bytes after the opcode", b[1:3], length, len(b)-1)
	}
	if b[3] != 30 {
		t.Fatalf("NumElements = %d", b[3])
	}
}

func TestIntegers(t *testing.T) {
	tests := []struct {
		v    uint64
		want string
	}{
		{0, "00"}, {1, "01"}, {2, "0a02"}, {0xFF, "0aff"}, {0x100, "0b0001"},
		{0xFFFF, "0bffff"}, {0x10000, "0c00000100"}, {0xFFFF_FFFF, "0cffffffff"},
		{1 << 32, "0e0000000001000000"}, {^uint64(0), "0effffffffffffffff"},
	}
	for _, tt := range tests {
		if got := hex.EncodeToString(mustEncode(t, Integer(tt.v))); got != tt.want {
			t.Errorf("Integer(%#x) = %s, want %s", tt.v, got, tt.want)
		}
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		path string
		want string // hex of the NameString
	}{
		{"_SB", "5f53425f"},
		{`\_SB`, "5c5f53425f"},
		{"^PCI0", "5e50434930"},
		{"^^A", "5e5e415f5f5f"},
		{"A.B", "2e415f5f5f425f5f5f"},
		{`\A.B.C`, "5c2f03415f5f5f425f5f5f435f5f5f"},
		{`\`, "5c00"},
	}
	for _, tt := range tests {
		got, err := nameString(tt.path)
		if err != nil || hex.EncodeToString(got) != tt.want {
			t.Errorf("nameString(%q) = %x, %v; want %s", tt.path, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "a", "TOOLONG", "1ABC", "A..B", "A-B", "A.", `\\A`} {
		if _, err := Encode(Name(bad, Integer(0))); !errors.Is(err, ErrInvalid) {
			t.Errorf("Name(%q): error = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestEISAID(t *testing.T) {
	tests := []struct {
		id   string
		want uint32
	}{
		{"PNP0A03", 0x030A_D041},
		{"PNP0A08", 0x080A_D041},
		{"PNP0501", 0x0105_D041},
		{"PNP0C02", 0x020C_D041},
	}
	for _, tt := range tests {
		got, err := EISAID(tt.id)
		if err != nil || uint32(got) != tt.want {
			t.Errorf("EISAID(%q) = %#x, %v; want %#x", tt.id, got, err, tt.want)
		}
	}
	for _, bad := range []string{"PNP0A0", "pnp0a03", "PNP0a03", "P1P0A03", "PNP0A0G"} {
		if _, err := EISAID(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("EISAID(%q) error = %v, want ErrInvalid", bad, err)
		}
		if _, err := Encode(Name("_HID", EISAIDObject(bad))); !errors.Is(err, ErrInvalid) {
			t.Errorf("EISAIDObject(%q) encodes", bad)
		}
	}
}

func TestInvalidObjects(t *testing.T) {
	many := make([]Object, 256)
	for i := range many {
		many[i] = Integer(0)
	}
	tests := map[string]Object{
		"stringNUL":       String("a\x00b"),
		"stringNonASCII":  String("é"),
		"package256":      Package(many...),
		"method8Args":     Method("_FOO", 8, false),
		"irq16":           ResourceTemplate(IRQNoFlags(16)),
		"ioBackwards":     ResourceTemplate(IO(0x10, 0x0F, 1, 1)),
		"wordIOFull":      ResourceTemplate(WordIO(0, 0xFFFF)),
		"dwordBackwards":  ResourceTemplate(DWordMemory(2, 1, false)),
		"qwordWhole":      ResourceTemplate(QWordMemory(0, ^uint64(0), false)),
		"badNameInDevice": Device("PCI0", Name("x", Integer(1))),
		"badNameInScope":  Scope("_SB", Method("lower", 0, false)),
	}
	for name, o := range tests {
		if _, err := Encode(o); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: error = %v, want ErrInvalid", name, err)
		}
	}
}

func TestMethodFlags(t *testing.T) {
	got := hex.EncodeToString(mustEncode(t, Method("_FOO", 2, true, Return(Integer(1)))))
	// MethodOp, PkgLength 8, "_FOO", flags 2|serialized, ReturnOp One.
	if want := "14085f464f4f0aa401"; got != want {
		t.Errorf("Method = %s, want %s", got, want)
	}
}
