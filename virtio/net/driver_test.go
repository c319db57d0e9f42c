package net

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"kvmstack/netdev"
	"kvmstack/virtio"
	"kvmstack/vmm/memory"
)

// ring is the driver side of one split virtqueue in test guest RAM.
type ring struct {
	t        *testing.T
	mem      *memory.Memory
	size     uint16
	desc     memory.GuestAddr
	avail    memory.GuestAddr
	used     memory.GuestAddr
	data     memory.GuestAddr // bump allocator for buffers
	free     []uint16
	availIdx uint16
	lastUsed uint16
	chains   map[uint16][]gbuf   // head -> buffers, for reading back
	descs    map[uint16][]uint16 // head -> descriptor indexes, to recycle
}

// gbuf is one guest buffer of a chain.
type gbuf struct {
	addr  memory.GuestAddr
	n     uint32
	write bool
}

func newRing(t *testing.T, mem *memory.Memory, base memory.GuestAddr, size uint16) *ring {
	r := &ring{t: t, mem: mem, size: size, desc: base, chains: map[uint16][]gbuf{}, descs: map[uint16][]uint16{}}
	r.avail = r.desc + memory.GuestAddr(16*uint64(size))
	r.used = (r.avail + memory.GuestAddr(6+2*uint64(size)) + 3) &^ 3
	r.data = base + 0x10000
	// A new driver starts from clean rings, whatever an earlier one left.
	if err := mem.WriteAt(make([]byte, r.data-base), base); err != nil {
		t.Fatal(err)
	}
	for i := range size {
		r.free = append(r.free, i)
	}
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
	r.data += memory.GuestAddr((uint64(n) + 15) &^ 15)
	return a
}

// add makes a chain available: readable buffers with contents (parts), then
// writable ones of the given sizes.
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
		bufs = append(bufs, gbuf{r.alloc(n), n, true})
	}
	return r.addRaw(bufs)
}

func (r *ring) addRaw(bufs []gbuf) uint16 {
	r.t.Helper()
	if len(bufs) > len(r.free) {
		r.t.Fatalf("ring full")
	}
	idx := r.free[:len(bufs)]
	r.free = r.free[len(bufs):]
	for i, b := range bufs {
		var flags, next uint16
		if i+1 < len(bufs) {
			flags, next = 1, idx[i+1]
		}
		if b.write {
			flags |= 2
		}
		d := make([]byte, 16)
		binary.LittleEndian.PutUint64(d, uint64(b.addr))
		binary.LittleEndian.PutUint32(d[8:], b.n)
		binary.LittleEndian.PutUint16(d[12:], flags)
		binary.LittleEndian.PutUint16(d[14:], next)
		if err := r.mem.WriteAt(d, r.desc+memory.GuestAddr(16*uint64(idx[i]))); err != nil {
			r.t.Fatal(err)
		}
	}
	head := idx[0]
	r.chains[head] = bufs
	r.descs[head] = append([]uint16(nil), idx...)
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

// waitUsed waits until n more chains are used and returns them, recycling
// their descriptors.
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
				r.t.Fatalf("%d of %d chains used after 5s", len(out), n)
			}
			time.Sleep(time.Millisecond)
			continue
		}
		e := r.used + 4 + memory.GuestAddr(8*uint64(r.lastUsed%r.size))
		head, _ := r.mem.Uint32(e)
		l, _ := r.mem.Uint32(e + 4)
		r.lastUsed++
		out = append(out, usedElem{uint16(head), l})
		r.free = append(r.free, r.descs[uint16(head)]...)
	}
	return out
}

// written returns the first n bytes the device wrote into chain head.
func (r *ring) written(head uint16, n uint32) []byte {
	var out []byte
	for _, b := range r.chains[head] {
		if !b.write || n == 0 {
			continue
		}
		m := min(n, b.n)
		p := make([]byte, m)
		if err := r.mem.ReadAt(p, b.addr); err != nil {
			r.t.Fatal(err)
		}
		out = append(out, p...)
		n -= m
	}
	return out
}

// fakeTap is a Backend over one end of a socket pair; the test holds the
// other end as the host network.
type fakeTap struct {
	*netdev.PacketFile
	supported netdev.Offload
	mtu       int
	mu        sync.Mutex
	offloads  []netdev.Offload // every SetOffload, in order
}

func (f *fakeTap) SupportedOffloads() netdev.Offload { return f.supported }
func (f *fakeTap) MTU() (int, error)                 { return f.mtu, nil }
func (f *fakeTap) SetOffload(o netdev.Offload) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offloads = append(f.offloads, o)
	return nil
}

// harness is a device with a driver, activated, and the host end of its tap.
type harness struct {
	t      *testing.T
	dev    *Device
	tap    *fakeTap
	host   *netdev.PacketFile
	mem    *memory.Memory
	rx, tx *ring
	kicks  [2]chan struct{}
	irqs   [2]chan struct{}
	broken chan error
}

const allOffloads = netdev.OffloadCsum | netdev.OffloadTSO4 | netdev.OffloadTSO6 | netdev.OffloadTSOECN

func newHarness(t *testing.T, features uint64) *harness {
	t.Helper()
	a, b, err := netdev.SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	mem, err := memory.New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	tap := &fakeTap{PacketFile: a, supported: allOffloads, mtu: 1500}
	dev, err := NewWithBackend("fake", tap, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dev: dev, tap: tap, host: b, mem: mem, broken: make(chan error, 4)}
	h.rx = newRing(t, mem, 0x100000, 256)
	h.tx = newRing(t, mem, 0x400000, 256)
	for i := range 2 {
		h.kicks[i] = make(chan struct{}, 1)
		h.irqs[i] = make(chan struct{}, 1024)
	}
	t.Cleanup(func() {
		dev.Close()
		b.Close()
		mem.Close()
	})
	if err := dev.Activate(h.activation(features)); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) activation(features uint64) virtio.Activation {
	return virtio.Activation{
		Memory:   h.mem,
		Features: features | virtio.FeatureVersion1,
		Queues:   []*virtio.Queue{h.rx.queue(), h.tx.queue()},
		Kicks:    []<-chan struct{}{h.kicks[0], h.kicks[1]},
		Interrupt: func(q int) error {
			h.irqs[q] <- struct{}{}
			return nil
		},
		Broken: func(err error) { h.broken <- err },
	}
}

func (h *harness) kick(q int) {
	select {
	case h.kicks[q] <- struct{}{}:
	default:
	}
}

// hostRead reads one packet the device sent to the tap.
func (h *harness) hostRead() []byte {
	h.t.Helper()
	if err := h.host.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		h.t.Fatal(err)
	}
	buf := make([]byte, 70000)
	n, err := h.host.ReadPacket([][]byte{buf}, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return buf[:n]
}

func (h *harness) hostWrite(p []byte) {
	h.t.Helper()
	if _, err := h.host.WritePacket([][]byte{p}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) wantBroken() error {
	h.t.Helper()
	select {
	case err := <-h.broken:
		return err
	case <-time.After(5 * time.Second):
		h.t.Fatal("device not marked broken")
		return nil
	}
}

func (h *harness) wantNotBroken() {
	h.t.Helper()
	select {
	case err := <-h.broken:
		h.t.Fatalf("device marked broken: %v", err)
	default:
	}
}
