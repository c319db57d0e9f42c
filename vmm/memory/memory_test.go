package memory

import (
	"errors"
	"testing"
)

func TestPlan(t *testing.T) {
	tests := []struct {
		name    string
		size    uint64
		want    []Range
		wantErr bool
	}{
		{"64MiB", 64 << 20, []Range{{0, 64 << 20}}, false},
		{"exactly3GiB", 3 << 30, []Range{{0, 3 << 30}}, false},
		{"crosses3GiB", 3<<30 + 256<<20, []Range{{0, 3 << 30}, {HoleEnd, 256 << 20}}, false},
		{"8GiB", 8 << 30, []Range{{0, 3 << 30}, {HoleEnd, 5 << 30}}, false},
		{"tooSmall", 1 << 20, nil, true},
		{"tooBig", 2 << 40, nil, true},
		{"unaligned", 64<<20 + 1, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Plan(tt.size)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Plan(%d) error = %v, wantErr %v", tt.size, err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("Plan(%d) = %v, want %v", tt.size, got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("Plan(%d)[%d] = %v, want %v", tt.size, i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestAccessAcrossHole(t *testing.T) {
	// 3 GiB + 64 MiB of address space costs nothing until touched.
	m, err := New(3<<30 + 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(m.Regions()) != 2 {
		t.Fatalf("regions = %d, want 2", len(m.Regions()))
	}
	tests := []struct {
		name string
		addr GuestAddr
		n    uint64
		ok   bool
	}{
		{"start", 0, 8, true},
		{"lastLowByte", HoleStart - 1, 1, true},
		{"straddlesHoleStart", HoleStart - 4, 8, false},
		{"inHole", HoleStart + 0x1000, 4, false},
		{"highStart", HoleEnd, 8, true},
		{"highEnd", HoleEnd + 64<<20 - 8, 8, true},
		{"pastEnd", HoleEnd + 64<<20 - 4, 8, false},
		{"wraps", ^GuestAddr(0) - 2, 8, false},
		{"hugeLength", 0x1000, ^uint64(0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Slice(tt.addr, tt.n)
			if tt.ok && err != nil {
				t.Fatalf("Slice(%#x, %d): %v", tt.addr, tt.n, err)
			}
			if !tt.ok && !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("Slice(%#x, %d) error = %v, want ErrOutOfRange", tt.addr, tt.n, err)
			}
		})
	}
	if err := m.PutUint64(HoleEnd+8, 0x1122334455667788); err != nil {
		t.Fatal(err)
	}
	v, err := m.Uint32(HoleEnd + 12)
	if err != nil || v != 0x11223344 {
		t.Fatalf("Uint32 = %#x, %v; want 0x11223344", v, err)
	}
	buf := make([]byte, 2)
	if err := m.ReadAt(buf, HoleEnd+8); err != nil || buf[0] != 0x88 || buf[1] != 0x77 {
		t.Fatalf("ReadAt = %x, %v", buf, err)
	}
}
