package firmware

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"kvmstack/vmm/memory"
)

func TestLoadInitrd(t *testing.T) {
	initrd := testCode(0x12345, 7)
	tests := []struct {
		name     string
		memSize  uint64
		kernel   Kernel
		want     memory.GuestAddr
		wantErr  error
		errMatch string
	}{
		// As high as possible, page-aligned, below the end of RAM.
		{"top", 128 << 20, Kernel{End: 0x1204000, InitrdAddrMax: 0x7fffffff}, (128<<20 - 0x12345) &^ 0xfff, nil, ""},
		// initrd_addr_max is the last byte the initrd may occupy.
		{"addrMax", 128 << 20, Kernel{End: 0x1204000, InitrdAddrMax: 0x3ffffff}, (64<<20 - 0x12345) &^ 0xfff, nil, ""},
		// Guest RAM split by the hole: still below 4 GiB, under 2 GiB.
		{"bigGuest", 3<<30 + 64<<20, Kernel{End: 0x1204000, InitrdAddrMax: 0x7fffffff}, (2<<30 - 0x12345) &^ 0xfff, nil, ""},
		// The whole low RAM is usable when the header allows it.
		{"aboveAddrMaxOfRAM", 3<<30 + 64<<20, Kernel{End: 0x1204000, InitrdAddrMax: 0xffffffff}, (3<<30 - 0x12345) &^ 0xfff, nil, ""},
		// Exactly fits above the kernel.
		{"tight", 64 << 20, Kernel{End: 64<<20 - 0x13000, InitrdAddrMax: 0x7fffffff}, 64<<20 - 0x13000, nil, ""},
		{"noRoom", 64 << 20, Kernel{End: 64<<20 - 0x12000, InitrdAddrMax: 0x7fffffff}, 0, ErrNoRoom, "do not fit between the kernel's end 0x3fee000 and 0x4000000"},
		{"kernelAboveMax", 64 << 20, Kernel{End: 0x3000000, InitrdAddrMax: 0x1ffffff}, 0, ErrNoRoom, "do not fit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMemory(t, tt.memSize)
			path := writeTemp(t, "initrd.img", initrd)
			k := tt.kernel
			addr, size, err := LoadInitrd(m, path, &k)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.HasPrefix(err.Error(), "initrd "+path+": ") || !strings.Contains(err.Error(), tt.errMatch) {
					t.Fatalf("error = %v, want %v with %q", err, tt.wantErr, tt.errMatch)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if addr != tt.want || size != uint64(len(initrd)) {
				t.Fatalf("initrd at %#x size %#x, want %#x size %#x", addr, size, tt.want, len(initrd))
			}
			if addr%pageSize != 0 || addr < k.End {
				t.Fatalf("initrd at %#x: unaligned or below the kernel end %#x", addr, k.End)
			}
			got, _ := m.Slice(addr, size)
			if !bytes.Equal(got, initrd) {
				t.Fatal("initrd contents differ")
			}
		})
	}
}

func TestLoadInitrdErrors(t *testing.T) {
	m := newMemory(t, 64<<20)
	k := &Kernel{End: 0x1204000, InitrdAddrMax: 0x7fffffff}
	if _, _, err := LoadInitrd(m, writeTemp(t, "empty", nil), k); !errors.Is(err, ErrTruncated) {
		t.Fatalf("empty initrd: %v", err)
	}
	if _, _, err := LoadInitrd(m, "/nonexistent/initrd", k); err == nil || !strings.HasPrefix(err.Error(), "initrd /nonexistent/initrd: open") {
		t.Fatalf("missing initrd: %v", err)
	}
	if _, _, err := LoadInitrd(m, t.TempDir(), k); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("directory: %v", err)
	}
	if _, _, err := LoadInitrd(m, writeTemp(t, "i", []byte("x")), nil); err == nil {
		t.Fatal("no kernel: no error")
	}
}
