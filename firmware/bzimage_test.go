package firmware

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"kvmstack/vmm/memory"
)

func TestLoadBzImageCompressed(t *testing.T) {
	elf := linuxLikeELF().bytes()
	img := defaultBzImage(compressPayload(t, compGzip, elf))
	tests := []struct {
		name      string
		mutate    func(*testBzImage)
		wantStart memory.GuestAddr
		wantEnd   memory.GuestAddr
	}{
		// Relocatable, loaded at 1 MiB: the decompressor moves to
		// pref_address (16 MiB) and needs init_size from there.
		{"relocatable", func(*testBzImage) {}, 0x100000, 0x1000000 + 0x800000},
		// An alignment above pref_address wins.
		{"bigAlignment", func(b *testBzImage) { b.align = 0x2000000 }, 0x100000, 0x2000000 + 0x800000},
		// Not relocatable: the kernel goes to pref_address.
		{"fixed", func(b *testBzImage) { b.relocatable = false; b.prefAddress = 0x200000 }, 0x100000, 0x200000 + 0x800000},
		// setup_sects 0 means 4.
		{"setupSects0", func(b *testBzImage) { b.setupSects = 0 }, 0x100000, 0x1800000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := img
			tt.mutate(&b)
			data := b.bytes()
			m := newMemory(t, 64<<20)
			k, err := LoadKernel(m, writeTemp(t, "bzImage", data), LoadOptions{PreferPVH: true})
			if err != nil {
				t.Fatal(err)
			}
			if k.Format != FormatBzImage || k.Mode != Entry64 || k.Entry != 0x100200 {
				t.Fatalf("kernel = %s %v %#x, want bzImage 64-bit 0x100200", k.Format, k.Mode, k.Entry)
			}
			if k.Start != tt.wantStart || k.End != tt.wantEnd {
				t.Fatalf("span [%#x, %#x), want [%#x, %#x)", k.Start, k.End, tt.wantStart, tt.wantEnd)
			}
			pm := data[5*512:]
			got, _ := m.Slice(0x100000, uint64(len(pm)))
			if !bytes.Equal(got, pm) {
				t.Fatal("protected-mode code not at 1 MiB")
			}
			if !bytes.Equal(k.Setup, data[hdrSetupSects:0x26c]) {
				t.Fatalf("Setup = %d bytes, want the header [0x1f1, 0x26c)", len(k.Setup))
			}
			if k.CmdlineSize != 2047 || k.InitrdAddrMax != 0x7fffffff {
				t.Fatalf("limits = %d, %#x", k.CmdlineSize, k.InitrdAddrMax)
			}
		})
	}
}

func TestLoadBzImageDecompressed(t *testing.T) {
	e := linuxLikeELF()
	elf := e.bytes()
	for _, comp := range []string{compGzip, compZstd, compXZ, compLZMA, compLZ4} {
		for _, pvh := range []bool{false, true} {
			name := comp
			if pvh {
				name += "/pvh"
			}
			t.Run(name, func(t *testing.T) {
				data := defaultBzImage(compressPayload(t, comp, elf)).bytes()
				m := newMemory(t, 64<<20)
				k, err := LoadKernel(m, writeTemp(t, "bzImage", data), LoadOptions{DecompressBzImage: true, PreferPVH: pvh})
				if err != nil {
					t.Fatal(err)
				}
				wantMode, wantEntry := Entry64, memory.GuestAddr(e.entry)
				if pvh {
					wantMode, wantEntry = EntryPVH, memory.GuestAddr(e.pvhEntry)
				}
				if k.Format != FormatBzImageDecompressed || k.Mode != wantMode || k.Entry != wantEntry {
					t.Fatalf("kernel = %s %v %#x, want decompressed %v %#x", k.Format, k.Mode, k.Entry, wantMode, wantEntry)
				}
				if k.Start != 0x1000000 || k.End != 0x1204000 {
					t.Fatalf("span [%#x, %#x)", k.Start, k.End)
				}
				if !bytes.Equal(k.Setup, data[hdrSetupSects:0x26c]) {
					t.Fatal("Setup is not the bzImage's header")
				}
				for _, s := range e.segs {
					got, _ := m.Slice(memory.GuestAddr(s.paddr), uint64(len(s.data)))
					if !bytes.Equal(got, s.data) {
						t.Fatalf("segment at %#x not loaded", s.paddr)
					}
				}
				// Nothing at 1 MiB: the compressed code is not loaded.
				if s, _ := m.Slice(0x100000, 0x1000); bytes.IndexFunc(s, func(r rune) bool { return r != 0 }) >= 0 {
					t.Fatal("decompressed load wrote the protected-mode code")
				}
			})
		}
	}
}

func TestLoadBzImageErrors(t *testing.T) {
	le := binary.LittleEndian
	elf := linuxLikeELF().bytes()
	gz := compressPayload(t, compGzip, elf)
	base := defaultBzImage(gz)
	build := func(fn func(*testBzImage)) []byte {
		b := base
		fn(&b)
		return b.bytes()
	}
	patch := func(fn func([]byte)) []byte {
		d := base.bytes()
		fn(d)
		return d
	}
	withPayload := func(p []byte) []byte { return build(func(b *testBzImage) { b.payload = p }) }
	badSize := bytes.Clone(gz)
	le.PutUint32(badSize[len(badSize)-4:], uint32(len(elf)+1))
	flipped := bytes.Clone(gz)
	flipped[len(flipped)/2] ^= 0xff
	notELF := compressPayload(t, compGzip, bytes.Repeat([]byte("kernel"), 100))

	tests := []struct {
		name       string
		data       []byte
		decompress bool
		memSize    uint64
		want       error
		msg        string
	}{
		{"bootFlag", patch(func(d []byte) { d[hdrBootFlag] = 0 }), false, 0, ErrCorrupt, "boot_flag 0xaa00"},
		{"oldVersion", build(func(b *testBzImage) { b.version = 0x0202 }), false, 0, ErrUnsupported, "bzImage setup header: unsupported: version 2.02 too old for 64-bit boot"},
		{"zImage", build(func(b *testBzImage) { b.loadflags = 0 }), false, 0, ErrUnsupported, "LOADED_HIGH"},
		{"kernel32", build(func(b *testBzImage) { b.xloadflags = 0x2 }), false, 0, ErrUnsupported, "XLF_KERNEL_64"},
		{"headerOnly", base.bytes()[:0x240], false, 0, ErrTruncated, "setup header: truncated"},
		{"setupTruncated", base.bytes()[:0x800], false, 0, ErrTruncated, "4 setup sectors, file has 2048 bytes"},
		{"syssizePastEOF", func() []byte { d := base.bytes(); return d[:len(d)-32] }(), false, 0, ErrTruncated, "(syssize)"},
		{"syssize0", patch(func(d []byte) { le.PutUint32(d[hdrSyssize:], 0) }), false, 0, ErrCorrupt, "syssize 0"},
		{"headerEnd", patch(func(d []byte) { d[hdrJump+1] = 0x10 }), false, 0, ErrCorrupt, "header ends at 0x212"},
		{"initSize0", build(func(b *testBzImage) { b.initSize = 0 }), false, 0, ErrCorrupt, "init_size 0"},
		{"alignment", build(func(b *testBzImage) { b.align = 0x300000 }), false, 0, ErrCorrupt, "kernel_alignment 0x300000"},
		{"initSizePastRAM", build(func(b *testBzImage) { b.initSize = 0x4000000 }), false, 0, ErrNoRoom, "decompression window (pref_address, init_size) [0x1000000,+0x4000000) outside guest RAM"},
		{"payloadOutside", patch(func(d []byte) { le.PutUint32(d[hdrPayloadLength:], 0x100000) }), true, 0, ErrTruncated, "outside the protected-mode code"},
		{"payloadEmpty", patch(func(d []byte) { le.PutUint32(d[hdrPayloadLength:], 0) }), true, 0, ErrTruncated, "bzImage payload"},
		{"unknownCompressor", withPayload(append([]byte("MZ\x00\x00rubbish"), 0, 0, 1, 0)), true, 0, ErrUnsupported, "unknown compression (magic 4d5a0000"},
		{"lzo", withPayload(append([]byte{0x89, 'L', 'Z', 'O', 0, 0xd, 0xa, 0x1a, 0xa}, 0, 0, 1, 0)), true, 0, ErrUnsupported, "compression lzo"},
		{"sizeMismatch", withPayload(badSize), true, 0, ErrCorrupt, "the trailer declares"},
		{"corruptStream", withPayload(flipped), true, 0, ErrCorrupt, "bzImage payload: gzip: corrupt"},
		{"truncatedStream", withPayload(append(gz[:len(gz)/2:len(gz)/2], gz[len(gz)-4:]...)), true, 0, ErrTruncated, "gzip: truncated"},
		{"tooLargeForRAM", withPayload(le.AppendUint32(bytes.Clone(gz[:len(gz)-4]), 0xf0000000)), true, 0, ErrTooLarge, "exceeds the limit of 67108864 bytes"},
		{"payloadNotELF", withPayload(notELF), true, 0, ErrCorrupt, "decompressed data is not an ELF (magic 6b65726e656c6b65...)"},
		{"payloadELFOutsideRAM", func() []byte {
			e := linuxLikeELF()
			e.segs[1].paddr = 0x3fff000
			return withPayload(compressPayload(t, compZstd, e.bytes()))
		}(), true, 0, ErrNoRoom, "bzImage payload (zstd): ELF segment 1 [0x3fff000,+0x4000) outside guest RAM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMemory(t, 64<<20)
			path := writeTemp(t, "bzImage", tt.data)
			_, err := LoadKernel(m, path, LoadOptions{DecompressBzImage: tt.decompress})
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "kernel "+path+": ") || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q: want the path and %q", err, tt.msg)
			}
			if s, _ := m.Slice(0x100000, 0x300000); bytes.IndexFunc(s, func(r rune) bool { return r != 0 }) >= 0 {
				t.Fatal("a rejected kernel wrote guest memory")
			}
		})
	}
}
