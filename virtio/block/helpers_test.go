package block

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"kvmstack/virtio"
	"kvmstack/vmm/memory"
)

// memBackend is an in-memory Backend that records calls and can be made to
// fail, for the device tests.
type memBackend struct {
	mu       sync.Mutex
	data     []byte
	fail     error // returned by every operation when set
	flushes  int
	discards []Segment
	zeroes   []Segment
	closed   bool
}

var errInjected = errors.New("injected backend failure")

func newMemBackend(size int) *memBackend { return &memBackend{data: make([]byte, size)} }

func (b *memBackend) ReadAt(bufs [][]byte, off int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	for _, p := range bufs {
		off += int64(copy(p, b.data[off:]))
	}
	return nil
}

func (b *memBackend) WriteAt(bufs [][]byte, off int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	for _, p := range bufs {
		off += int64(copy(b.data[off:], p))
	}
	return nil
}

func (b *memBackend) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	b.flushes++
	return nil
}

func (b *memBackend) Discard(off, n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	b.discards = append(b.discards, Segment{Offset: off, Length: n})
	clear(b.data[off : off+n])
	return nil
}

func (b *memBackend) WriteZeroes(off, n int64, unmap bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	b.zeroes = append(b.zeroes, Segment{Offset: off, Length: n, Unmap: unmap})
	clear(b.data[off : off+n])
	return nil
}

func (b *memBackend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}

func (b *memBackend) setFail(err error) {
	b.mu.Lock()
	b.fail = err
	b.mu.Unlock()
}

func newMemory(t testing.TB) *memory.Memory {
	t.Helper()
	mem, err := memory.New(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	return mem
}

// header encodes a request header.
func header(typ uint32, sector uint64) []byte {
	h := make([]byte, headerSize)
	binary.LittleEndian.PutUint32(h, typ)
	binary.LittleEndian.PutUint64(h[8:], sector)
	return h
}

// segment encodes one discard/write-zeroes range.
func segment(sector uint64, n, flags uint32) []byte {
	s := make([]byte, segmentSize)
	binary.LittleEndian.PutUint64(s, sector)
	binary.LittleEndian.PutUint32(s[8:], n)
	binary.LittleEndian.PutUint32(s[12:], flags)
	return s
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ring is the driver side of the request queue in test guest RAM.
type ring struct {
	t        *testing.T
	mem      *memory.Memory
	size     uint16
	desc     memory.GuestAddr
	avail    memory.GuestAddr
	used     memory.GuestAddr
	data     memory.GuestAddr // bump allocator for buffers
	next     uint16           // next free descriptor (never recycled: tests are short)
	availIdx uint16
	lastUsed uint16
	chains   map[uint16][]gbuf
}

// gbuf is one guest buffer of a chain.
type gbuf struct {
	addr  memory.GuestAddr
	n     uint32
	write bool
}

func newRing(t *testing.T, mem *memory.Memory, size uint16) *ring {
	r := &ring{t: t, mem: mem, size: size, desc: 0x1000, chains: map[uint16][]gbuf{}}
	r.avail = r.desc + memory.GuestAddr(16*uint64(size))
	r.used = (r.avail + memory.GuestAddr(6+2*uint64(size)) + 3) &^ 3
	r.data = 0x100000
	return r
}

func (r *ring) queue() *virtio.Queue {
	q, err := virtio.NewQueue(r.mem, r.size, r.desc, r.avail, r.used, false)
	if err != nil {
		r.t.Fatal(err)
	}
	return q
}

func (r *ring) alloc(n uint32) memory.GuestAddr {
	a := r.data
	r.data += memory.GuestAddr((uint64(n) + 511) &^ 511)
	return a
}

// add makes a chain available: readable buffers holding parts, then
// writable buffers of the given sizes. It returns the chain's head.
func (r *ring) add(parts [][]byte, writable []uint32) uint16 {
	r.t.Helper()
	var bufs []gbuf
	for _, p := range parts {
		a := r.alloc(uint32(len(p)))
		if err := r.mem.WriteAt(p, a); err != nil {
			r.t.Fatal(err)
		}
		bufs = append(bufs, gbuf{a, uint32(len(p)), false})
	}
	for _, n := range writable {
		a := r.alloc(n)
		// 0xee marks bytes the device did not write.
		fill := make([]byte, n)
		for i := range fill {
			fill[i] = 0xee
		}
		if err := r.mem.WriteAt(fill, a); err != nil {
			r.t.Fatal(err)
		}
		bufs = append(bufs, gbuf{a, n, true})
	}
	return r.addRaw(bufs)
}

func (r *ring) addRaw(bufs []gbuf) uint16 {
	r.t.Helper()
	head := r.next
	for i, b := range bufs {
		idx := r.next
		r.next++
		if r.next > r.size {
			r.t.Fatal("ring out of descriptors")
		}
		var flags, next uint16
		if i+1 < len(bufs) {
			flags, next = 1, idx+1
		}
		if b.write {
			flags |= 2
		}
		d := make([]byte, 16)
		binary.LittleEndian.PutUint64(d, uint64(b.addr))
		binary.LittleEndian.PutUint32(d[8:], b.n)
		binary.LittleEndian.PutUint16(d[12:], flags)
		binary.LittleEndian.PutUint16(d[14:], next)
		if err := r.mem.WriteAt(d, r.desc+memory.GuestAddr(16*uint64(idx))); err != nil {
			r.t.Fatal(err)
		}
	}
	r.chains[head] = bufs
	slot := r.avail + 4 + memory.GuestAddr(2*uint64(r.availIdx%r.size))
	if err := r.mem.PutUint16(slot, head); err != nil {
		r.t.Fatal(err)
	}
	r.availIdx++
	if err := r.mem.PutUint16(r.avail+2, r.availIdx); err != nil {
		r.t.Fatal(err)
	}
	return head
}

// usedElem is one entry the device put on the used ring.
type usedElem struct {
	head uint16
	len  uint32
}

// waitUsed waits until n more chains are used and returns them.
func (r *ring) waitUsed(n int) []usedElem {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var out []usedElem
	for len(out) < n {
		idx, err := r.mem.Uint16(r.used + 2)
		if err != nil {
			r.t.Fatal(err)
		}
		if idx == r.lastUsed {
			if time.Now().After(deadline) {
				r.t.Fatalf("timed out waiting for %d used chains, got %d", n, len(out))
			}
			time.Sleep(time.Millisecond)
			continue
		}
		e := r.used + 4 + memory.GuestAddr(8*uint64(r.lastUsed%r.size))
		head, _ := r.mem.Uint32(e)
		l, _ := r.mem.Uint32(e + 4)
		out = append(out, usedElem{uint16(head), l})
		r.lastUsed++
	}
	return out
}

// status is the last byte of the chain's last writable buffer.
func (r *ring) status(head uint16) uint8 {
	r.t.Helper()
	bufs := r.chains[head]
	b := bufs[len(bufs)-1]
	v := make([]byte, 1)
	if err := r.mem.ReadAt(v, b.addr+memory.GuestAddr(b.n-1)); err != nil {
		r.t.Fatal(err)
	}
	return v[0]
}

// written returns the contents of the chain's writable buffers, status
// byte excluded.
func (r *ring) written(head uint16) []byte {
	r.t.Helper()
	var out []byte
	for _, b := range r.chains[head] {
		if !b.write {
			continue
		}
		p := make([]byte, b.n)
		if err := r.mem.ReadAt(p, b.addr); err != nil {
			r.t.Fatal(err)
		}
		out = append(out, p...)
	}
	return out[:len(out)-1]
}

// harness runs a Device on one queue with a fake transport.
type harness struct {
	*ring
	dev     *Device
	backend *memBackend
	kick    chan struct{}
	mu      sync.Mutex
	broken  []error
	irqs    int
}

func newHarness(t *testing.T, readOnly bool, diskSize int) *harness {
	t.Helper()
	mem := newMemory(t)
	b := newMemBackend(diskSize)
	d, err := NewWithBackend(Config{Path: "mem", ReadOnly: readOnly, ID: "disk-serial-0001"}, b, int64(diskSize))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{ring: newRing(t, mem, 64), dev: d, backend: b, kick: make(chan struct{}, 1)}
	err = d.Activate(virtio.Activation{
		Memory:   mem,
		Features: d.Features() | virtio.FeatureVersion1,
		Queues:   []*virtio.Queue{h.queue()},
		Kicks:    []<-chan struct{}{h.kick},
		Interrupt: func(int) error {
			h.mu.Lock()
			h.irqs++
			h.mu.Unlock()
			return nil
		},
		Broken: func(err error) {
			h.mu.Lock()
			h.broken = append(h.broken, err)
			h.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return h
}

func (h *harness) notify() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// do submits one request and waits for it; it returns the used length and
// the status.
func (h *harness) do(parts [][]byte, writable []uint32) (uint16, uint32, uint8) {
	h.t.Helper()
	head := h.add(parts, writable)
	h.notify()
	u := h.waitUsed(1)
	if u[0].head != head {
		h.t.Fatalf("used head %d, want %d", u[0].head, head)
	}
	return head, u[0].len, h.status(head)
}

func (h *harness) brokenErrs() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.broken...)
}

func waitABit() { time.Sleep(2 * time.Millisecond) }

// bytesAt copies the backend's bytes [off, off+n).
func (b *memBackend) bytesAt(off, n int) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.data[off:off+n]...)
}

// calls returns copies of the recorded calls.
func (b *memBackend) calls() (flushes int, discards, zeroes []Segment) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushes, append([]Segment(nil), b.discards...), append([]Segment(nil), b.zeroes...)
}

func (h *harness) interrupts() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.irqs
}
