package firmware

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"kvmstack/vmm/memory"
)

func TestLoadELF(t *testing.T) {
	good := linuxLikeELF()
	tests := []struct {
		name      string
		elf       testELF
		opt       LoadOptions
		wantMode  EntryMode
		wantEntry memory.GuestAddr
	}{
		{"entry64", good, LoadOptions{}, Entry64, 0x1000000},
		{"preferPVH", good, LoadOptions{PreferPVH: true}, EntryPVH, 0x1000100},
		{"pvhNote4Bytes", func() testELF { e := good; e.pvhDesc = 4; return e }(), LoadOptions{PreferPVH: true}, EntryPVH, 0x1000100},
		{"preferPVHWithoutNote", func() testELF { e := good; e.pvhEntry = 0; return e }(), LoadOptions{PreferPVH: true}, Entry64, 0x1000000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMemory(t, 64<<20)
			// Dirty the bss so zeroing it is observable.
			dirty, _ := m.Slice(0x1200000, 0x4000)
			for i := range dirty {
				dirty[i] = 0xa5
			}
			path := writeTemp(t, "vmlinux", tt.elf.bytes())
			k, err := LoadKernel(m, path, tt.opt)
			if err != nil {
				t.Fatal(err)
			}
			if k.Format != FormatELF || k.Mode != tt.wantMode || k.Entry != tt.wantEntry {
				t.Fatalf("kernel = %s %v %#x, want elf %v %#x", k.Format, k.Mode, k.Entry, tt.wantMode, tt.wantEntry)
			}
			if k.Start != 0x1000000 || k.End != 0x1204000 {
				t.Fatalf("span [%#x, %#x), want [0x1000000, 0x1204000)", k.Start, k.End)
			}
			if k.Setup != nil || k.CmdlineSize != defaultCmdlineSize || k.InitrdAddrMax != defaultInitrdAddrMax {
				t.Fatalf("ELF kernel limits = setup %d bytes, cmdline %d, initrd max %#x", len(k.Setup), k.CmdlineSize, k.InitrdAddrMax)
			}
			for _, s := range tt.elf.segs {
				got, _ := m.Slice(memory.GuestAddr(s.paddr), uint64(len(s.data)))
				if !bytes.Equal(got, s.data) {
					t.Fatalf("segment at %#x not loaded", s.paddr)
				}
			}
			bss, _ := m.Slice(0x1201800, 0x2800)
			if bytes.IndexFunc(bss, func(r rune) bool { return r != 0 }) >= 0 {
				t.Fatal("bss not zeroed")
			}
		})
	}
}

// corruptELF returns the good ELF with fn applied to its bytes.
func corruptELF(fn func(b []byte) []byte) []byte {
	return fn(linuxLikeELF().bytes())
}

func phdr(b []byte, i int) []byte { return b[elfHeaderSize+i*elfPhdrSize:] }

func TestLoadELFErrors(t *testing.T) {
	le := binary.LittleEndian
	tests := []struct {
		name    string
		data    []byte
		opt     LoadOptions
		memSize uint64
		want    error
		msg     string
	}{
		{"headerOnly", corruptELF(func(b []byte) []byte { return b[:40] }), LoadOptions{}, 0, ErrTruncated, "ELF header: truncated"},
		{"elf32", corruptELF(func(b []byte) []byte { b[4] = 1; return b }), LoadOptions{}, 0, ErrUnsupported, "class 1, want ELF64"},
		{"bigEndian", corruptELF(func(b []byte) []byte { b[5] = 2; return b }), LoadOptions{}, 0, ErrUnsupported, "little-endian"},
		{"sharedObject", corruptELF(func(b []byte) []byte { le.PutUint16(b[16:], 3); return b }), LoadOptions{}, 0, ErrUnsupported, "want ET_EXEC"},
		{"aarch64", corruptELF(func(b []byte) []byte { le.PutUint16(b[18:], 183); return b }), LoadOptions{}, 0, ErrUnsupported, "machine 183"},
		{"phentsize", corruptELF(func(b []byte) []byte { le.PutUint16(b[54:], 32); return b }), LoadOptions{}, 0, ErrCorrupt, "program header size 32"},
		{"noPhdrs", corruptELF(func(b []byte) []byte { le.PutUint16(b[56:], 0); return b }), LoadOptions{}, 0, ErrCorrupt, "no program headers"},
		{"phdrsPastEOF", corruptELF(func(b []byte) []byte { le.PutUint64(b[32:], uint64(len(b))-8); return b }), LoadOptions{}, 0, ErrTruncated, "past end of file"},
		{"segmentPastEOF", corruptELF(func(b []byte) []byte { return b[:len(b)-16] }), LoadOptions{}, 0, ErrTruncated, "ELF segment 1: truncated: file bytes"},
		{"fileszOverMemsz", corruptELF(func(b []byte) []byte { le.PutUint64(phdr(b, 1)[40:], 0x100); return b }), LoadOptions{}, 0, ErrCorrupt, "larger than memory size"},
		{"belowOneMiB", corruptELF(func(b []byte) []byte { le.PutUint64(phdr(b, 0)[24:], 0x7000); return b }), LoadOptions{}, 0, ErrNoRoom, "ELF segment 0 [0x7000,+0x3000) overlaps the boot structures"},
		{"pastRAM", corruptELF(func(b []byte) []byte { le.PutUint64(phdr(b, 1)[24:], 0x3ffe000); return b }), LoadOptions{}, 0, ErrNoRoom, "ELF segment 1 [0x3ffe000,+0x4000) outside guest RAM"},
		{"inHole", corruptELF(func(b []byte) []byte { le.PutUint64(phdr(b, 1)[24:], 0xfeb00000); return b }), LoadOptions{}, 3<<30 + 64<<20, ErrNoRoom, "outside guest RAM"},
		{"wraps", corruptELF(func(b []byte) []byte { le.PutUint64(phdr(b, 1)[24:], ^uint64(0)-0x1000); return b }), LoadOptions{}, 0, ErrNoRoom, "wraps around"},
		{"overlap", corruptELF(func(b []byte) []byte { le.PutUint64(phdr(b, 1)[24:], 0x1002000); return b }), LoadOptions{}, 0, ErrCorrupt, "ELF segments 0 and 1: corrupt: physical ranges"},
		{"virtualEntry", corruptELF(func(b []byte) []byte { le.PutUint64(b[24:], 0xffffffff81000000); return b }), LoadOptions{}, 0, ErrUnsupported, "entry 0xffffffff81000000"},
		{"pvhEntryOutside", corruptELF(func(b []byte) []byte {
			i := bytes.Index(b, []byte("Xen\x00"))
			le.PutUint64(b[i+4:], 0x5000000)
			return b
		}), LoadOptions{PreferPVH: true}, 0, ErrCorrupt, "PVH note: corrupt: entry 0x5000000"},
		{"noteTruncated", corruptELF(func(b []byte) []byte { le.PutUint64(phdr(b, 2)[32:], 20); return b }), LoadOptions{}, 0, ErrTruncated, "ELF note segment 2"},
		{"noLoad", corruptELF(func(b []byte) []byte {
			le.PutUint32(phdr(b, 0)[0:], 6)
			le.PutUint32(phdr(b, 1)[0:], 6)
			return b
		}), LoadOptions{}, 0, ErrCorrupt, "no loadable segment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := tt.memSize
			if size == 0 {
				size = 64 << 20
			}
			m := newMemory(t, size)
			path := writeTemp(t, "vmlinux", tt.data)
			_, err := LoadKernel(m, path, tt.opt)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "kernel "+path+": ") || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q: want the path and %q", err, tt.msg)
			}
			// Validation precedes every write: a rejected file leaves
			// the kernel's area untouched.
			if s, _ := m.Slice(0x1000000, 0x204000); bytes.IndexFunc(s, func(r rune) bool { return r != 0 }) >= 0 {
				t.Fatal("a rejected kernel wrote guest memory")
			}
		})
	}
}

func TestLoadKernelForeignFiles(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrTruncated, "empty file"},
		{"text", []byte("hello, world"), ErrUnknownFormat, "not an ELF or bzImage (magic 68656c6c6f2c2077...)"},
		{"gzipKernel", []byte{0x1f, 0x8b, 8, 0}, ErrUnknownFormat, "(magic 1f8b0800)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMemory(t, 64<<20)
			path := writeTemp(t, "k", tt.data)
			_, err := LoadKernel(m, path, LoadOptions{})
			if !errors.Is(err, tt.want) || !strings.HasPrefix(err.Error(), "kernel "+path+": ") || !strings.HasSuffix(err.Error(), tt.msg) {
				t.Fatalf("error = %v, want %v ending in %q", err, tt.want, tt.msg)
			}
		})
	}
	m := newMemory(t, 64<<20)
	if _, err := LoadKernel(m, "/nonexistent/vmlinux", LoadOptions{}); err == nil || !strings.Contains(err.Error(), "kernel /nonexistent/vmlinux: open") {
		t.Fatalf("missing file: error = %v", err)
	}
	if _, err := LoadKernel(m, t.TempDir(), LoadOptions{}); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("directory: error = %v", err)
	}
}
