package firmware

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"

	"kvmstack/vmm/memory"
)

// This file builds the synthetic kernels the tests load: ELF64 executables
// shaped like a Linux vmlinux, and bzImages around them, laid out by the
// boot protocol the same way arch/x86/boot/tools/build.c does.

// testSegment is one PT_LOAD of a synthetic ELF.
type testSegment struct {
	paddr uint64
	data  []byte
	memsz uint64 // 0 means len(data)
}

// testELF describes a synthetic ELF kernel.
type testELF struct {
	entry    uint64
	segs     []testSegment
	pvhEntry uint64 // 0: no PVH note
	pvhDesc  int    // 4 or 8 bytes; 0 means 8, as Linux writes it
}

// bytes lays the ELF out: header, program headers, note, then the segments'
// bytes at 4 KiB-aligned offsets.
func (e testELF) bytes() []byte {
	le := binary.LittleEndian
	var note []byte
	if e.pvhEntry != 0 {
		desc := e.pvhDesc
		if desc == 0 {
			desc = 8
		}
		// An unrelated note first, as Linux has ("Linux" notes), so
		// the parser has to walk past it.
		note = appendNote(note, "Linux", 6, []byte("6.12.0\x00"))
		d := make([]byte, desc)
		if desc == 4 {
			le.PutUint32(d, uint32(e.pvhEntry))
		} else {
			le.PutUint64(d, e.pvhEntry)
		}
		note = appendNote(note, "Xen", xenElfnotePhys32Entry, d)
	}
	nph := len(e.segs)
	if note != nil {
		nph++
	}
	phoff := uint64(elfHeaderSize)
	off := phoff + uint64(nph)*elfPhdrSize
	noteOff := off
	off += uint64(len(note))
	out := make([]byte, off)
	copy(out, elfMagic)
	out[4], out[5], out[6] = elfClass64, elfDataLSB, elfVersion
	le.PutUint16(out[16:], elfTypeExec)
	le.PutUint16(out[18:], elfMachineX8664)
	le.PutUint32(out[20:], 1)
	le.PutUint64(out[24:], e.entry)
	le.PutUint64(out[32:], phoff)
	le.PutUint16(out[52:], elfHeaderSize)
	le.PutUint16(out[54:], elfPhdrSize)
	le.PutUint16(out[56:], uint16(nph))
	copy(out[noteOff:], note)
	for i, s := range e.segs {
		for len(out)%4096 != 0 {
			out = append(out, 0)
		}
		ph := out[phoff+uint64(i)*elfPhdrSize:]
		memsz := s.memsz
		if memsz == 0 {
			memsz = uint64(len(s.data))
		}
		le.PutUint32(ph[0:], ptLoad)
		le.PutUint32(ph[4:], 5)
		le.PutUint64(ph[8:], uint64(len(out)))
		le.PutUint64(ph[16:], 0xffffffff80000000+s.paddr) // a virtual address, as in vmlinux
		le.PutUint64(ph[24:], s.paddr)
		le.PutUint64(ph[32:], uint64(len(s.data)))
		le.PutUint64(ph[40:], memsz)
		le.PutUint64(ph[48:], 0x200000)
		out = append(out, s.data...)
	}
	if note != nil {
		ph := out[phoff+uint64(len(e.segs))*elfPhdrSize:]
		le.PutUint32(ph[0:], ptNote)
		le.PutUint64(ph[8:], noteOff)
		le.PutUint64(ph[32:], uint64(len(note)))
		le.PutUint64(ph[40:], uint64(len(note)))
		le.PutUint64(ph[48:], 4)
	}
	return out
}

func appendNote(b []byte, name string, typ uint32, desc []byte) []byte {
	le := binary.LittleEndian
	n := append([]byte(name), 0)
	b = le.AppendUint32(b, uint32(len(n)))
	b = le.AppendUint32(b, uint32(len(desc)))
	b = le.AppendUint32(b, typ)
	b = append(b, n...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	b = append(b, desc...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// testCode is deterministic "text" with x86 call/jmp opcodes in it, so the
// xz BCJ filter has real work to do.
func testCode(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1103515245 + 12345
		switch {
		case i%37 == 0:
			b[i] = 0xe8
		case i%53 == 0:
			b[i] = 0xe9
		case i%5 == 0:
			b[i] = 0
		default:
			b[i] = byte(x >> 16)
		}
	}
	return b
}

// linuxLikeELF is a small vmlinux: text at 16 MiB with startup_64 at its
// start and the PVH entry a little later, data, and a bss-only tail.
func linuxLikeELF() testELF {
	return testELF{
		entry: 0x1000000,
		segs: []testSegment{
			{paddr: 0x1000000, data: testCode(0x3000, 1)},
			{paddr: 0x1200000, data: testCode(0x1800, 2), memsz: 0x4000},
		},
		pvhEntry: 0x1000100,
	}
}

// testBzImage describes a synthetic bzImage.
type testBzImage struct {
	version     uint16
	setupSects  byte
	loadflags   byte
	xloadflags  uint16
	relocatable bool
	align       uint32
	prefAddress uint64
	initSize    uint32
	payload     []byte // the compressed payload including its le32 size
}

func defaultBzImage(payload []byte) testBzImage {
	return testBzImage{
		version:     0x020f,
		setupSects:  4,
		loadflags:   loadedHigh,
		xloadflags:  0x7f,
		relocatable: true,
		align:       0x200000,
		prefAddress: 0x1000000,
		initSize:    0x800000,
		payload:     payload,
	}
}

// bytes lays the bzImage out: setup sectors with the header, then the
// protected-mode code (a 0x200-byte stand-in for startup_32/startup_64, the
// payload, padding to 16 bytes).
func (b testBzImage) bytes() []byte {
	le := binary.LittleEndian
	sects := int(b.setupSects)
	if sects == 0 {
		sects = defaultSetupSects
	}
	setup := make([]byte, (sects+1)*512)
	setup[hdrSetupSects] = b.setupSects
	le.PutUint16(setup[hdrBootFlag:], bootFlagMagic)
	setup[hdrJump], setup[hdrJump+1] = 0xeb, 0x6a // header ends at 0x26c, as in 6.12
	copy(setup[hdrHeader:], hdrMagic)
	le.PutUint16(setup[hdrVersion:], b.version)
	setup[hdrLoadflags] = b.loadflags
	le.PutUint32(setup[hdrInitrdAddrMax:], 0x7fffffff)
	le.PutUint32(setup[hdrKernelAlign:], b.align)
	if b.relocatable {
		setup[hdrRelocatable] = 1
	}
	le.PutUint16(setup[hdrXloadflags:], b.xloadflags)
	le.PutUint32(setup[hdrCmdlineSize:], 2047)
	le.PutUint64(setup[hdrPrefAddress:], b.prefAddress)
	le.PutUint32(setup[hdrInitSize:], b.initSize)
	// A recognisable byte pattern in the header tail, to see it copied.
	le.PutUint32(setup[0x264:], 0x190) // handover_offset
	le.PutUint32(setup[0x268:], 0xabcd)

	pm := testCode(0x200, 9)
	le.PutUint32(setup[hdrPayloadOffset:], uint32(len(pm)))
	le.PutUint32(setup[hdrPayloadLength:], uint32(len(b.payload)))
	pm = append(pm, b.payload...)
	for len(pm)%16 != 0 {
		pm = append(pm, 0)
	}
	le.PutUint32(setup[hdrSyssize:], uint32(len(pm)/16))
	return append(setup, pm...)
}

// compressPayload compresses data as the kernel's build does for comp, with
// the le32 uncompressed size appended (size_append). xz here has no BCJ
// filter; testdata holds the command-line tools' output for that.
func compressPayload(t testing.TB, comp string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch comp {
	case compGzip:
		w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		mustWrite(t, w, data)
	case compZstd:
		w, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, w, data)
	case compXZ:
		w, err := xz.WriterConfig{CheckSum: xz.CRC32}.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, w, data)
	case compLZMA:
		w, err := lzma.WriterConfig{DictCap: 1 << 16, EOSMarker: true, Size: -1}.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, w, data)
		// Claim the 64 MiB dictionary of the kernel's `lzma -9`: legal,
		// and the decoder has to shrink it to the output size.
		binary.LittleEndian.PutUint32(buf.Bytes()[1:], 64<<20)
	case compLZ4:
		w := lz4.NewWriter(&buf)
		if err := w.Apply(lz4.LegacyOption(true)); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, w, data)
	default:
		t.Fatalf("no in-process compressor for %s", comp)
	}
	return binary.LittleEndian.AppendUint32(buf.Bytes(), uint32(len(data)))
}

func mustWrite(t testing.TB, w io.WriteCloser, data []byte) {
	t.Helper()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// newMemory maps guest RAM for a test and unmaps it at the end.
func newMemory(t testing.TB, size uint64) *memory.Memory {
	t.Helper()
	m, err := memory.New(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// writeTemp stores data in a file in the test's temp dir.
func writeTemp(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
