package virtio

import (
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"kvmstack/vmm/memory"
)

// Fuzz layout: guest RAM is 16 MiB; the fuzzer's bytes are copied over the
// descriptor table, available ring and a scratch area from fuzzDesc on, so
// descriptors can point at each other (indirect tables, buffers) within it.
const (
	fuzzDesc  memory.GuestAddr = 0x1000
	fuzzQSize                  = 16
	fuzzAvail                  = fuzzDesc + 16*fuzzQSize
	fuzzUsed  memory.GuestAddr = 0x8000
)

// FuzzQueue feeds arbitrary ring contents to Pop/Push. Nothing may panic,
// every error must be ErrMalformed, and every chain returned must respect
// the limits the device code relies on.
func FuzzQueue(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	mem, err := memory.New(testRAM)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = mem.Close() })
	f.Fuzz(func(t *testing.T, ring []byte, eventIdx bool) {
		// Reuse one RAM mapping: clear the rings and scratch area each run.
		if err := mem.WriteAt(make([]byte, 0x10000), 0); err != nil {
			t.Fatal(err)
		}
		if len(ring) > int(fuzzUsed-fuzzDesc) {
			ring = ring[:fuzzUsed-fuzzDesc]
		}
		if err := mem.WriteAt(ring, fuzzDesc); err != nil {
			t.Fatal(err)
		}
		q, err := NewQueue(mem, fuzzQSize, fuzzDesc, fuzzAvail, fuzzUsed, eventIdx)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 * fuzzQSize {
			c, err := q.Pop()
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Pop error %v is not ErrMalformed", err)
				}
				break
			}
			if c == nil {
				break
			}
			if len(c.Descs) == 0 || len(c.Descs) > fuzzQSize+MaxIndirectDescs {
				t.Fatalf("chain of %d descriptors", len(c.Descs))
			}
			if c.ReadableLen()+c.WritableLen() > MaxChainBytes {
				t.Fatalf("chain of %d bytes", c.ReadableLen()+c.WritableLen())
			}
			for _, d := range c.Descs {
				if _, err := mem.Slice(d.Addr, uint64(d.Len)); err != nil {
					t.Fatalf("descriptor outside RAM: %v", err)
				}
			}
			if _, err := io.Copy(io.Discard, c.Reader(mem)); err != nil {
				t.Fatal(err)
			}
			w := c.Writer(mem)
			if _, err := w.Write(make([]byte, min(c.WritableLen(), 1<<16))); err != nil {
				t.Fatal(err)
			}
			if err := q.Push(c.Head, 0); err != nil {
				t.Fatal(err)
			}
			q.NeedInterrupt()
			if _, err := q.EnableNotifications(); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatal(err)
			}
		}
	})
}

// fuzzSeeds builds a few well-formed and malformed rings in the fuzz layout.
func fuzzSeeds() [][]byte {
	type d struct {
		addr  uint64
		n     uint32
		flags uint16
		next  uint16
	}
	build := func(descs []d, heads []uint16, extra map[int][]d) []byte {
		b := make([]byte, int(fuzzUsed-fuzzDesc))
		for i, x := range descs {
			o := 16 * i
			binary.LittleEndian.PutUint64(b[o:], x.addr)
			binary.LittleEndian.PutUint32(b[o+8:], x.n)
			binary.LittleEndian.PutUint16(b[o+12:], x.flags)
			binary.LittleEndian.PutUint16(b[o+14:], x.next)
		}
		for off, tbl := range extra {
			for i, x := range tbl {
				o := off + 16*i
				binary.LittleEndian.PutUint64(b[o:], x.addr)
				binary.LittleEndian.PutUint32(b[o+8:], x.n)
				binary.LittleEndian.PutUint16(b[o+12:], x.flags)
				binary.LittleEndian.PutUint16(b[o+14:], x.next)
			}
		}
		a := int(fuzzAvail - fuzzDesc)
		binary.LittleEndian.PutUint16(b[a+2:], uint16(len(heads)))
		for i, h := range heads {
			binary.LittleEndian.PutUint16(b[a+4+2*i:], h)
		}
		// Keep the seeds short: cut trailing zeros.
		end := len(b)
		for end > 0 && b[end-1] == 0 {
			end--
		}
		return b[:end]
	}
	const buf = 0x4000
	const tbl = 0x2000 // offset of an indirect table inside the fuzz area
	return [][]byte{
		build(nil, nil, nil),
		build([]d{{buf, 64, 0, 0}}, []uint16{0}, nil),
		build([]d{{buf, 16, descFlagNext, 1}, {buf + 16, 32, descFlagWrite, 0}}, []uint16{0}, nil),
		build([]d{{uint64(fuzzDesc) + tbl, 32, descFlagIndirect, 0}}, []uint16{0},
			map[int][]d{tbl: {{buf, 8, descFlagNext, 1}, {buf + 8, 8, descFlagWrite, 0}}}),
		build([]d{{buf, 8, descFlagNext, 0}}, []uint16{0}, nil),
		build([]d{{uint64(fuzzDesc) + tbl, 16, descFlagIndirect, 0}}, []uint16{0},
			map[int][]d{tbl: {{uint64(fuzzDesc) + tbl, 16, descFlagIndirect, 0}}}),
		build([]d{{buf, 8, descFlagWrite, 0}, {buf, 8, 0, 0}}, []uint16{0, 1, 0}, nil),
	}
}
