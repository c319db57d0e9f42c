package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"kvmstack/vmm/memory"
)

// Limits on what a driver may put in a queue. A chain longer than these is
// treated as a guest bug rather than processed, so a hostile ring cannot make
// the device loop or allocate without bound.
const (
	// MaxQueueSize is the largest split virtqueue (virtio 1.2 2.7).
	MaxQueueSize = 32768
	// MaxIndirectDescs bounds one indirect table. Linux never builds a
	// larger one (it limits a request to the queue size or seg_max), and
	// QEMU enforces the same bound.
	MaxIndirectDescs = 1024
	// MaxChainBytes bounds the summed length of a chain: the used ring
	// reports written lengths in 32 bits.
	MaxChainBytes = 1<<32 - 1
)

// Descriptor and ring flags (virtio 1.2 2.7.5, 2.7.6, 2.7.8).
const (
	descFlagNext      = 1
	descFlagWrite     = 2
	descFlagIndirect  = 4
	availFlagNoIntr   = 1
	usedFlagNoNotify  = 1
	descSize          = 16
	availHeaderSize   = 4
	usedHeaderSize    = 4
	usedElemSize      = 8
	queueAlignDesc    = 16
	queueAlignDriver  = 2
	queueAlignDevice  = 4
	ringTrailerSize   = 2 // used_event / avail_event
	maxChainDescTotal = MaxQueueSize + MaxIndirectDescs
)

// ErrMalformed is wrapped by every error that a guest's bad ring contents or
// queue configuration cause. Callers that see it mark the device broken.
var ErrMalformed = errors.New("virtio: malformed virtqueue")

// ErrNotInFlight is returned by Push for a head the queue did not hand out
// (a device bug, not a guest one).
var ErrNotInFlight = errors.New("virtio: descriptor head not in flight")

// Queue is the device side of one split virtqueue. It is not safe for
// concurrent use: one device worker owns it. The guest writes the rings
// concurrently, so every value read from them is copied once, checked and
// only then used.
type Queue struct {
	mem      *memory.Memory
	size     uint16
	eventIdx bool

	// The three areas alias guest RAM (checked to lie inside it once, at
	// creation; RAM mappings never move).
	desc  []byte
	avail []byte
	used  []byte

	lastAvail uint16 // next available ring index to consume
	usedIdx   uint16 // our copy of used.idx; the guest's copy is never read back
	signalled uint16 // usedIdx at the last NeedInterrupt
	inflight  []uint64
	// readLen[head] is the device-readable length of the chain in flight
	// at head, counted into stats when it is pushed.
	readLen []uint32
	stats   queueStats

	fence atomic.Int32
}

// NewQueue checks the driver's queue configuration and maps its three areas:
// desc (descriptor table), driver (available ring) and device (used ring).
// size must be a power of two up to MaxQueueSize. eventIdx is whether
// FeatureEventIdx was negotiated.
func NewQueue(mem *memory.Memory, size uint16, desc, driver, device memory.GuestAddr, eventIdx bool) (*Queue, error) {
	if size == 0 || size > MaxQueueSize || size&(size-1) != 0 {
		return nil, fmt.Errorf("%w: queue size %d is not a power of two up to %d", ErrMalformed, size, MaxQueueSize)
	}
	if desc%queueAlignDesc != 0 || driver%queueAlignDriver != 0 || device%queueAlignDevice != 0 {
		return nil, fmt.Errorf("%w: misaligned rings desc=%#x driver=%#x device=%#x", ErrMalformed, uint64(desc), uint64(driver), uint64(device))
	}
	n := uint64(size)
	q := &Queue{mem: mem, size: size, eventIdx: eventIdx, inflight: make([]uint64, (n+63)/64), readLen: make([]uint32, n)}
	var err error
	if q.desc, err = mem.Slice(desc, n*descSize); err != nil {
		return nil, fmt.Errorf("%w: descriptor table: %w", ErrMalformed, err)
	}
	if q.avail, err = mem.Slice(driver, availHeaderSize+2*n+ringTrailerSize); err != nil {
		return nil, fmt.Errorf("%w: available ring: %w", ErrMalformed, err)
	}
	if q.used, err = mem.Slice(device, usedHeaderSize+usedElemSize*n+ringTrailerSize); err != nil {
		return nil, fmt.Errorf("%w: used ring: %w", ErrMalformed, err)
	}
	return q, nil
}

// Size is the queue size the driver configured.
func (q *Queue) Size() uint16 { return q.size }

// barrier is a full memory barrier: a locked read-modify-write orders every
// earlier store before every later load on x86, which the store-then-check
// sequences of notification suppression need (virtio 1.2 2.7.7.2).
func (q *Queue) barrier() { q.fence.Add(1) }

func (q *Queue) availIdx() uint16 { return binary.LittleEndian.Uint16(q.avail[2:]) }

// pending is how many chains the driver made available that Pop has not
// consumed. More than the queue size can only come from a corrupt index.
func (q *Queue) pending() (uint16, error) {
	n := q.availIdx() - q.lastAvail
	if n > q.size {
		return 0, fmt.Errorf("%w: available index %d is %d entries ahead of %d (queue size %d)", ErrMalformed, q.availIdx(), n, q.lastAvail, q.size)
	}
	return n, nil
}

// Pop returns the next available chain, or (nil, nil) when there is none. An
// error means the guest corrupted the queue; the queue state is unchanged.
func (q *Queue) Pop() (*Chain, error) {
	n, err := q.pending()
	if err != nil || n == 0 {
		return nil, err
	}
	// x86 does not reorder loads with other loads, so the ring entry read
	// here is at least as new as the index read above.
	slot := uint64(q.lastAvail & (q.size - 1))
	head := binary.LittleEndian.Uint16(q.avail[availHeaderSize+2*slot:])
	if head >= q.size {
		return nil, fmt.Errorf("%w: available ring entry %d names descriptor %d of %d", ErrMalformed, q.lastAvail, head, q.size)
	}
	if q.inflight[head/64]&(1<<(head%64)) != 0 {
		return nil, fmt.Errorf("%w: descriptor %d made available again before it was used", ErrMalformed, head)
	}
	c, err := q.readChain(head)
	if err != nil {
		return nil, err
	}
	q.lastAvail++
	q.inflight[head/64] |= 1 << (head % 64)
	q.readLen[head] = uint32(min(c.ReadableLen(), MaxChainBytes))
	return c, nil
}

// readChain walks and flattens the chain starting at head, checking each
// descriptor against guest RAM and the limits above.
func (q *Queue) readChain(head uint16) (*Chain, error) {
	c := &Chain{Head: head, Descs: make([]Desc, 0, 4)}
	table, tableLen := q.desc, uint32(q.size)
	idx := uint32(head)
	inIndirect, sawWrite := false, false
	var visited uint32 // descriptors visited in the current table
	var total uint64
	for {
		if idx >= tableLen {
			return nil, fmt.Errorf("%w: chain %d: next descriptor %d outside table of %d", ErrMalformed, head, idx, tableLen)
		}
		visited++
		if visited > tableLen {
			return nil, fmt.Errorf("%w: chain %d: loop (more than %d descriptors)", ErrMalformed, head, tableLen)
		}
		d := table[uint64(idx)*descSize:]
		addr := memory.GuestAddr(binary.LittleEndian.Uint64(d))
		length := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])
		if flags&descFlagIndirect != 0 {
			switch {
			case inIndirect:
				return nil, fmt.Errorf("%w: chain %d: indirect descriptor inside an indirect table", ErrMalformed, head)
			case flags&descFlagNext != 0:
				return nil, fmt.Errorf("%w: chain %d: indirect descriptor with NEXT set", ErrMalformed, head)
			case length == 0 || length%descSize != 0 || length/descSize > MaxIndirectDescs:
				return nil, fmt.Errorf("%w: chain %d: indirect table of %d bytes", ErrMalformed, head, length)
			}
			t, err := q.mem.Slice(addr, uint64(length))
			if err != nil {
				return nil, fmt.Errorf("%w: chain %d: indirect table: %w", ErrMalformed, head, err)
			}
			table, tableLen, idx, visited, inIndirect = t, length/descSize, 0, 0, true
			continue
		}
		if _, err := q.mem.Slice(addr, uint64(length)); err != nil {
			return nil, fmt.Errorf("%w: chain %d: descriptor buffer: %w", ErrMalformed, head, err)
		}
		write := flags&descFlagWrite != 0
		if !write && sawWrite {
			return nil, fmt.Errorf("%w: chain %d: device-readable descriptor after a device-writable one", ErrMalformed, head)
		}
		sawWrite = sawWrite || write
		total += uint64(length)
		if total > MaxChainBytes {
			return nil, fmt.Errorf("%w: chain %d: longer than %d bytes", ErrMalformed, head, uint64(MaxChainBytes))
		}
		c.Descs = append(c.Descs, Desc{Addr: addr, Len: length, Write: write})
		if flags&descFlagNext == 0 {
			return c, nil
		}
		idx = uint32(next)
	}
}

// Push puts a finished chain on the used ring with the number of bytes the
// device wrote into it. The driver sees it at once; call NeedInterrupt after
// a batch of Pushes to learn whether to interrupt.
func (q *Queue) Push(head uint16, written uint32) error {
	if head >= q.size || q.inflight[head/64]&(1<<(head%64)) == 0 {
		return fmt.Errorf("%w: %d", ErrNotInFlight, head)
	}
	q.inflight[head/64] &^= 1 << (head % 64)
	q.stats.completed(q.readLen[head], written)
	e := q.used[usedHeaderSize+usedElemSize*uint64(q.usedIdx&(q.size-1)):]
	binary.LittleEndian.PutUint32(e, uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
	q.usedIdx++
	// x86 keeps stores in order, so the element is visible before the index.
	binary.LittleEndian.PutUint16(q.used[2:], q.usedIdx)
	return nil
}

// NeedInterrupt reports whether the driver wants a used-buffer notification
// for the chains pushed since the last call (VIRTIO_F_EVENT_IDX's used_event,
// or VRING_AVAIL_F_NO_INTERRUPT without it).
func (q *Queue) NeedInterrupt() bool {
	q.barrier()
	old, cur := q.signalled, q.usedIdx
	q.signalled = cur
	if old == cur {
		return false
	}
	if q.eventIdx {
		ev := binary.LittleEndian.Uint16(q.avail[availHeaderSize+2*uint64(q.size):])
		return cur-ev-1 < cur-old
	}
	return binary.LittleEndian.Uint16(q.avail)&availFlagNoIntr == 0
}

// EnableNotifications asks the driver to notify on the next available chain
// and reports whether chains arrived before the request became visible; the
// caller must then Pop again instead of waiting for a kick.
func (q *Queue) EnableNotifications() (bool, error) {
	if q.eventIdx {
		binary.LittleEndian.PutUint16(q.used[usedHeaderSize+usedElemSize*uint64(q.size):], q.lastAvail)
	} else {
		binary.LittleEndian.PutUint16(q.used, 0)
	}
	q.barrier()
	n, err := q.pending()
	return n > 0, err
}

// DisableNotifications asks the driver not to notify while the device is
// busy popping anyway. With event-idx nothing needs writing: the driver
// notifies only when it passes avail_event, which stays behind.
func (q *Queue) DisableNotifications() error {
	if !q.eventIdx {
		binary.LittleEndian.PutUint16(q.used, usedFlagNoNotify)
	}
	return nil
}

// Desc is one device-visible buffer of a chain, already checked to lie inside
// guest RAM.
type Desc struct {
	Addr  memory.GuestAddr
	Len   uint32
	Write bool
}

// Chain is one request: the head index to Push back and its buffers in order,
// with indirect tables flattened. Readable buffers precede writable ones.
type Chain struct {
	Head  uint16
	Descs []Desc
}

// ReadableLen is the total length of the device-readable buffers.
func (c *Chain) ReadableLen() uint64 {
	var n uint64
	for _, d := range c.Descs {
		if !d.Write {
			n += uint64(d.Len)
		}
	}
	return n
}

// WritableLen is the total length of the device-writable buffers.
func (c *Chain) WritableLen() uint64 {
	var n uint64
	for _, d := range c.Descs {
		if d.Write {
			n += uint64(d.Len)
		}
	}
	return n
}

// firstWritable is the index of the first device-writable descriptor.
func (c *Chain) firstWritable() int {
	for i, d := range c.Descs {
		if d.Write {
			return i
		}
	}
	return len(c.Descs)
}

// Buffers returns host slices aliasing the chain's readable (write=false) or
// writable (write=true) buffers, for vectored I/O (readv/writev on a tap or
// file) without a copy. The guest may change them at any time.
func (c *Chain) Buffers(mem *memory.Memory, write bool) ([][]byte, error) {
	descs := c.Descs[:c.firstWritable()]
	if write {
		descs = c.Descs[len(descs):]
	}
	bufs := make([][]byte, 0, len(descs))
	for _, d := range descs {
		b, err := mem.Slice(d.Addr, uint64(d.Len))
		if err != nil {
			return nil, err
		}
		if len(b) > 0 {
			bufs = append(bufs, b)
		}
	}
	return bufs, nil
}

// Reader reads the device-readable buffers in order, then returns io.EOF.
func (c *Chain) Reader(mem *memory.Memory) io.Reader {
	return &chainIO{mem: mem, descs: c.Descs[:c.firstWritable()]}
}

// Writer writes into the device-writable buffers in order; a write past
// their end fails with io.ErrShortWrite.
func (c *Chain) Writer(mem *memory.Memory) io.Writer {
	return &chainIO{mem: mem, descs: c.Descs[c.firstWritable():]}
}

// chainIO walks a run of descriptors, as a reader or as a writer.
type chainIO struct {
	mem   *memory.Memory
	descs []Desc
	off   uint32 // into descs[0]
}

// next returns the rest of the current buffer, skipping empty ones.
func (r *chainIO) next() ([]byte, error) {
	for len(r.descs) > 0 && r.off == r.descs[0].Len {
		r.descs, r.off = r.descs[1:], 0
	}
	if len(r.descs) == 0 {
		return nil, nil
	}
	d := r.descs[0]
	return r.mem.Slice(d.Addr+memory.GuestAddr(r.off), uint64(d.Len-r.off))
}

func (r *chainIO) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		b, err := r.next()
		if err != nil {
			return n, err
		}
		if b == nil {
			break
		}
		c := copy(p[n:], b)
		n += c
		r.off += uint32(c)
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (r *chainIO) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		b, err := r.next()
		if err != nil {
			return n, err
		}
		if b == nil {
			return n, io.ErrShortWrite
		}
		c := copy(b, p[n:])
		n += c
		r.off += uint32(c)
	}
	return n, nil
}
