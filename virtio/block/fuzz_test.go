package block

import (
	"errors"
	"testing"

	"kvmstack/virtio"
	"kvmstack/vmm/memory"
)

// fuzzChain encodes a chain for FuzzParseRequest: a flags byte (bit 0
// read-only, bit 1 no flush, bit 2 no discard/write-zeroes), a descriptor
// count, per descriptor a 16-bit length and a writable byte, then the bytes
// that fill the readable buffers in order.
func fuzzChain(flags byte, readable [][]byte, writable []uint16) []byte {
	out := []byte{flags, byte(len(readable) + len(writable))}
	for _, p := range readable {
		out = append(out, byte(len(p)), byte(len(p)>>8), 0)
	}
	for _, n := range writable {
		out = append(out, byte(n), byte(n>>8), 1)
	}
	for _, p := range readable {
		out = append(out, p...)
	}
	return out
}

// FuzzParseRequest feeds arbitrary chains to the parser and executes what it
// accepts against an in-memory disk: nothing may panic, every accepted
// range must lie inside the disk, and the status byte must be the chain's
// last writable byte.
func FuzzParseRequest(f *testing.F) {
	f.Add(fuzzChain(0, [][]byte{header(TypeIn, 1)}, []uint16{512, 1}))
	f.Add(fuzzChain(0, [][]byte{header(TypeOut, 7), make([]byte, 1024)}, []uint16{1}))
	f.Add(fuzzChain(1, [][]byte{header(TypeOut, 0), make([]byte, 512)}, []uint16{1}))
	f.Add(fuzzChain(0, [][]byte{header(TypeFlush, 0)}, []uint16{1}))
	f.Add(fuzzChain(2, [][]byte{header(TypeFlush, 0)}, []uint16{1}))
	f.Add(fuzzChain(0, [][]byte{header(TypeGetID, 0)}, []uint16{20, 1}))
	f.Add(fuzzChain(0, [][]byte{header(TypeDiscard, 0), cat(segment(0, 8, 0), segment(60, 4, 0))}, []uint16{1}))
	f.Add(fuzzChain(0, [][]byte{header(TypeWriteZeroes, 0), segment(10, 8, 1)}, []uint16{1}))
	f.Add(fuzzChain(4, [][]byte{header(TypeWriteZeroes, 0), segment(10, 8, 1)}, []uint16{1}))
	f.Add(fuzzChain(0, [][]byte{header(TypeIn, 1<<60)}, []uint16{512, 1}))
	f.Add(fuzzChain(0, [][]byte{header(TypeIn, 0)[:9], header(TypeIn, 0)[9:]}, []uint16{100, 413}))
	f.Add(fuzzChain(0, [][]byte{header(TypeOut, 0)}, nil))
	f.Add(fuzzChain(0, [][]byte{header(99, 0)}, []uint16{0, 1, 0}))
	const capacity = 64 // sectors
	mem := newMemory(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 2 {
			return
		}
		flags, n := in[0], int(in[1]%16)
		in = in[2:]
		if len(in) < 3*n {
			return
		}
		c := &virtio.Chain{}
		var next memory.GuestAddr = 0x10000
		var readable []virtio.Desc
		for i := range n {
			l := uint32(in[3*i]) | uint32(in[3*i+1])<<8
			d := virtio.Desc{Addr: next, Len: l, Write: in[3*i+2]&1 != 0}
			next += memory.GuestAddr(l) + 16
			if d.Write {
				c.Descs = append(c.Descs, d)
			} else {
				readable = append(readable, d)
			}
		}
		// Readable buffers come first, as the queue guarantees.
		c.Descs = append(readable, c.Descs...)
		payload := in[3*n:]
		for _, d := range readable {
			b, err := mem.Slice(d.Addr, uint64(d.Len))
			if err != nil {
				t.Fatal(err)
			}
			clear(b)
			payload = payload[copy(b, payload):]
		}
		features := allFeatures()
		if flags&2 != 0 {
			features &^= FeatureFlush
		}
		if flags&4 != 0 {
			features &^= FeatureDiscard | FeatureWriteZeroes
		}
		lim := testLimits(flags&1 != 0, features)
		lim.capacity = capacity
		r, err := parseRequest(mem, c, lim)
		if errors.Is(err, ErrNoStatus) {
			if c.WritableLen() != 0 {
				t.Fatalf("ErrNoStatus with %d writable bytes", c.WritableLen())
			}
			return
		}
		if c.WritableLen() == 0 {
			t.Fatalf("answered a chain without writable bytes: %v", err)
		}
		var last virtio.Desc
		for _, d := range c.Descs {
			if d.Write && d.Len > 0 {
				last = d
			}
		}
		want, _ := mem.Slice(last.Addr+memory.GuestAddr(last.Len-1), 1)
		if &r.Status[0] != &want[0] {
			t.Fatal("status byte is not the last writable byte")
		}
		if err != nil {
			return
		}
		if lim.readOnly && (r.Type == TypeOut || r.Type == TypeDiscard || r.Type == TypeWriteZeroes) {
			t.Fatalf("request type %d accepted on a read-only disk", r.Type)
		}
		if (r.Type == TypeIn || r.Type == TypeOut) && (r.Offset < 0 || r.Offset+int64(r.DataLen()) > capacity*SectorSize) {
			t.Fatalf("accepted I/O at %d+%d beyond %d sectors", r.Offset, r.DataLen(), capacity)
		}
		for _, s := range r.Segments {
			if s.Offset < 0 || s.Length < 0 || s.Offset+s.Length > capacity*SectorSize {
				t.Fatalf("accepted segment %+v beyond %d sectors", s, capacity)
			}
		}
		d, err := NewWithBackend(Config{ReadOnly: lim.readOnly, ID: "fuzz"}, newMemBackend(capacity*SectorSize), capacity*SectorSize)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.execute(r); err != nil {
			t.Fatalf("execute accepted request: %v", err)
		}
	})
}
