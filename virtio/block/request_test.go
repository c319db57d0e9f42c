package block

import (
	"errors"
	"math"
	"testing"

	"kvmstack/virtio"
	"kvmstack/vmm/memory"
)

// chainBuilder lays buffers out in test guest RAM and returns the chain the
// queue would hand the device, without a ring.
type chainBuilder struct {
	mem  *memory.Memory
	next memory.GuestAddr
}

func (b *chainBuilder) chain(t testing.TB, readable [][]byte, writable []uint32) *virtio.Chain {
	t.Helper()
	c := &virtio.Chain{}
	for _, p := range readable {
		if err := b.mem.WriteAt(p, b.next); err != nil {
			t.Fatal(err)
		}
		c.Descs = append(c.Descs, virtio.Desc{Addr: b.next, Len: uint32(len(p))})
		b.next += memory.GuestAddr(len(p)) + 64
	}
	for _, n := range writable {
		c.Descs = append(c.Descs, virtio.Desc{Addr: b.next, Len: n, Write: true})
		b.next += memory.GuestAddr(n) + 64
	}
	return c
}

func allFeatures() uint64 {
	return FeatureFlush | FeatureDiscard | FeatureWriteZeroes | FeatureSegMax | FeatureBlkSize
}

func testLimits(readOnly bool, features uint64) *limits {
	return &limits{
		capacity: 2048, readOnly: readOnly, features: features,
		maxDiscardSecs: maxDiscardSectors, maxDiscardSegs: maxDiscardSegs,
		maxZeroesSecs: maxZeroesSectors, maxZeroesSegs: maxZeroesSegs,
	}
}

func TestParseRequest(t *testing.T) {
	tooMany := make([][]byte, 0, maxDiscardSegs+1)
	for i := range maxDiscardSegs + 1 {
		tooMany = append(tooMany, segment(uint64(i), 1, 0))
	}
	tests := []struct {
		name     string
		readable [][]byte
		writable []uint32
		readOnly bool
		features uint64
		err      error
		typ      uint32
		offset   int64
		dataLen  int
		segs     []Segment
	}{
		{name: "read one sector", readable: [][]byte{header(TypeIn, 3)}, writable: []uint32{512, 1}, typ: TypeIn, offset: 3 * 512, dataLen: 512},
		{name: "read scattered", readable: [][]byte{header(TypeIn, 0)}, writable: []uint32{512, 1024, 4096, 1}, typ: TypeIn, dataLen: 5632},
		{name: "read status shares the data buffer", readable: [][]byte{header(TypeIn, 1)}, writable: []uint32{1025}, typ: TypeIn, offset: 512, dataLen: 1024},
		{name: "read last sector", readable: [][]byte{header(TypeIn, 2047)}, writable: []uint32{512, 1}, typ: TypeIn, offset: 2047 * 512, dataLen: 512},
		{name: "read zero length at the end", readable: [][]byte{header(TypeIn, 2048)}, writable: []uint32{1}, typ: TypeIn, offset: 2048 * 512},
		{name: "read past the end", readable: [][]byte{header(TypeIn, 2047)}, writable: []uint32{1024, 1}, err: ErrOutOfRange},
		{name: "read sector beyond capacity", readable: [][]byte{header(TypeIn, 4096)}, writable: []uint32{512, 1}, err: ErrOutOfRange},
		{name: "read sector overflows bytes", readable: [][]byte{header(TypeIn, math.MaxUint64>>8)}, writable: []uint32{512, 1}, err: ErrOutOfRange},
		{name: "read sector plus length overflows", readable: [][]byte{header(TypeIn, math.MaxUint64)}, writable: []uint32{512, 1}, err: ErrOutOfRange},
		{name: "read partial sector", readable: [][]byte{header(TypeIn, 0)}, writable: []uint32{100, 1}, err: ErrBadRequest},
		{name: "read with readable data", readable: [][]byte{header(TypeIn, 0), make([]byte, 512)}, writable: []uint32{512, 1}, err: ErrBadRequest},
		{name: "header split over two buffers", readable: [][]byte{header(TypeIn, 5)[:7], header(TypeIn, 5)[7:]}, writable: []uint32{512, 1}, typ: TypeIn, offset: 5 * 512, dataLen: 512},
		{name: "short header", readable: [][]byte{header(TypeIn, 0)[:8]}, writable: []uint32{512, 1}, err: ErrBadRequest},
		{name: "no header", writable: []uint32{512, 1}, err: ErrBadRequest},
		{name: "no status byte", readable: [][]byte{header(TypeOut, 0), make([]byte, 512)}, err: ErrNoStatus},
		{name: "only empty writable buffers", readable: [][]byte{header(TypeFlush, 0)}, writable: []uint32{0, 0}, err: ErrNoStatus},
		{name: "write", readable: [][]byte{header(TypeOut, 8), make([]byte, 512), make([]byte, 3584)}, writable: []uint32{1}, typ: TypeOut, offset: 8 * 512, dataLen: 4096},
		{name: "write header and data in one buffer", readable: [][]byte{cat(header(TypeOut, 8), make([]byte, 512))}, writable: []uint32{1}, typ: TypeOut, offset: 8 * 512, dataLen: 512},
		{name: "write past the end", readable: [][]byte{header(TypeOut, 2048), make([]byte, 512)}, writable: []uint32{1}, err: ErrOutOfRange},
		{name: "write with writable data", readable: [][]byte{header(TypeOut, 0), make([]byte, 512)}, writable: []uint32{512, 1}, err: ErrBadRequest},
		{name: "write to read-only disk", readable: [][]byte{header(TypeOut, 0), make([]byte, 512)}, writable: []uint32{1}, readOnly: true, err: ErrReadOnly},
		{name: "read from read-only disk", readable: [][]byte{header(TypeIn, 0)}, writable: []uint32{512, 1}, readOnly: true, typ: TypeIn, dataLen: 512},
		{name: "flush", readable: [][]byte{header(TypeFlush, 0)}, writable: []uint32{1}, typ: TypeFlush},
		{name: "flush not negotiated", readable: [][]byte{header(TypeFlush, 0)}, writable: []uint32{1}, features: FeatureDiscard, err: ErrUnsupported},
		{name: "get id", readable: [][]byte{header(TypeGetID, 0)}, writable: []uint32{IDSize, 1}, typ: TypeGetID, dataLen: IDSize},
		{name: "get id with readable data", readable: [][]byte{header(TypeGetID, 0), make([]byte, 4)}, writable: []uint32{IDSize, 1}, err: ErrBadRequest},
		{name: "unknown type", readable: [][]byte{header(99, 0)}, writable: []uint32{1}, err: ErrUnsupported},
		{name: "discard", readable: [][]byte{header(TypeDiscard, 0), cat(segment(0, 8, 0), segment(2040, 8, 0))}, writable: []uint32{1}, typ: TypeDiscard,
			segs: []Segment{{0, 4096, false}, {2040 * 512, 4096, false}}},
		{name: "discard segments split over buffers", readable: [][]byte{header(TypeDiscard, 0), segment(16, 8, 0)[:5], segment(16, 8, 0)[5:]}, writable: []uint32{1}, typ: TypeDiscard,
			segs: []Segment{{16 * 512, 4096, false}}},
		{name: "discard with unmap", readable: [][]byte{header(TypeDiscard, 0), segment(0, 8, 1)}, writable: []uint32{1}, err: ErrUnsupported},
		{name: "discard unknown flag", readable: [][]byte{header(TypeDiscard, 0), segment(0, 8, 2)}, writable: []uint32{1}, err: ErrUnsupported},
		{name: "discard past the end", readable: [][]byte{header(TypeDiscard, 0), segment(2047, 2, 0)}, writable: []uint32{1}, err: ErrOutOfRange},
		{name: "discard second segment past the end", readable: [][]byte{header(TypeDiscard, 0), segment(0, 1, 0), segment(math.MaxUint64, 1, 0)}, writable: []uint32{1}, err: ErrOutOfRange},
		{name: "discard too long", readable: [][]byte{header(TypeDiscard, 0), segment(0, maxDiscardSectors+1, 0)}, writable: []uint32{1}, err: ErrBadRequest},
		{name: "discard too many segments", readable: append([][]byte{header(TypeDiscard, 0)}, tooMany...), writable: []uint32{1}, err: ErrUnsupported},
		{name: "discard partial segment", readable: [][]byte{header(TypeDiscard, 0), segment(0, 1, 0)[:12]}, writable: []uint32{1}, err: ErrBadRequest},
		{name: "discard without segments", readable: [][]byte{header(TypeDiscard, 0)}, writable: []uint32{1}, err: ErrBadRequest},
		{name: "discard with writable data", readable: [][]byte{header(TypeDiscard, 0), segment(0, 1, 0)}, writable: []uint32{16, 1}, err: ErrBadRequest},
		{name: "discard not negotiated", readable: [][]byte{header(TypeDiscard, 0), segment(0, 1, 0)}, writable: []uint32{1}, features: FeatureFlush, err: ErrUnsupported},
		{name: "discard on read-only disk", readable: [][]byte{header(TypeDiscard, 0), segment(0, 1, 0)}, writable: []uint32{1}, readOnly: true, err: ErrReadOnly},
		{name: "write zeroes", readable: [][]byte{header(TypeWriteZeroes, 0), cat(segment(8, 16, 1), segment(100, 1, 0))}, writable: []uint32{1}, typ: TypeWriteZeroes,
			segs: []Segment{{8 * 512, 16 * 512, true}, {100 * 512, 512, false}}},
		{name: "write zeroes unknown flag", readable: [][]byte{header(TypeWriteZeroes, 0), segment(0, 8, 0x80000000)}, writable: []uint32{1}, err: ErrUnsupported},
		{name: "write zeroes on read-only disk", readable: [][]byte{header(TypeWriteZeroes, 0), segment(0, 1, 0)}, writable: []uint32{1}, readOnly: true, err: ErrReadOnly},
	}
	mem := newMemory(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &chainBuilder{mem: mem, next: 0x10000}
			c := b.chain(t, tt.readable, tt.writable)
			features := tt.features
			if features == 0 {
				features = allFeatures()
			}
			r, err := parseRequest(mem, c, testLimits(tt.readOnly, features))
			if !errors.Is(err, tt.err) || (err != nil && tt.err == nil) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if errors.Is(err, ErrNoStatus) {
				if r != nil {
					t.Errorf("request %+v with no status byte", r)
				}
				return
			}
			// The status byte is the last byte of the last writable buffer.
			last := c.Descs[len(c.Descs)-1]
			want, _ := mem.Slice(last.Addr+memory.GuestAddr(last.Len-1), 1)
			if r == nil || &r.Status[0] != &want[0] || len(r.Status) != 1 {
				t.Fatalf("status byte not the chain's last writable byte")
			}
			if err != nil {
				return
			}
			if r.Type != tt.typ || r.Offset != tt.offset || r.DataLen() != tt.dataLen {
				t.Errorf("type %d offset %d data %d, want %d %d %d", r.Type, r.Offset, r.DataLen(), tt.typ, tt.offset, tt.dataLen)
			}
			if len(r.Segments) != len(tt.segs) {
				t.Fatalf("segments %+v, want %+v", r.Segments, tt.segs)
			}
			for i := range tt.segs {
				if r.Segments[i] != tt.segs[i] {
					t.Errorf("segment %d: %+v, want %+v", i, r.Segments[i], tt.segs[i])
				}
			}
		})
	}
}

func TestInRange(t *testing.T) {
	tests := []struct {
		sector, n, capacity uint64
		ok                  bool
	}{
		{0, 0, 0, true},
		{0, 1, 0, false},
		{0, 10, 10, true},
		{10, 0, 10, true},
		{10, 1, 10, false},
		{9, 1, 10, true},
		{1, math.MaxUint64, 10, false},
		{math.MaxUint64, 1, math.MaxUint64, false},
		{math.MaxUint64, 0, math.MaxUint64, true},
	}
	for _, tt := range tests {
		if err := inRange(tt.sector, tt.n, tt.capacity); (err == nil) != tt.ok {
			t.Errorf("inRange(%d, %d, %d) = %v, want ok=%v", tt.sector, tt.n, tt.capacity, err, tt.ok)
		}
	}
}
