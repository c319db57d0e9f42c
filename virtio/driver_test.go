package virtio

import (
	"encoding/binary"
	"testing"

	"kvmstack/vmm/memory"
)

// testDriver is a minimal virtio driver over guest RAM: it lays out the rings
// the way Linux does and adds chains, so the device-side Queue can be tested
// without a guest. Its raw accessors also let tests corrupt the rings.
type testDriver struct {
	t        testing.TB
	mem      *memory.Memory
	size     uint16
	desc     memory.GuestAddr
	avail    memory.GuestAddr
	used     memory.GuestAddr
	data     memory.GuestAddr // bump allocator for buffers and indirect tables
	free     []uint16         // free descriptor indexes
	availIdx uint16
	lastUsed uint16
}

const testRAM = 16 << 20

func newTestDriver(t testing.TB, size uint16) *testDriver {
	t.Helper()
	mem, err := memory.New(testRAM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mem.Close() })
	d := &testDriver{t: t, mem: mem, size: size, desc: 0x10000}
	d.avail = d.desc + memory.GuestAddr(16*uint64(size))
	d.used = (d.avail + memory.GuestAddr(6+2*uint64(size)) + 3) &^ 3
	d.data = 0x100000
	for i := range size {
		d.free = append(d.free, i)
	}
	return d
}

func (d *testDriver) queue(eventIdx bool) *Queue {
	d.t.Helper()
	q, err := NewQueue(d.mem, d.size, d.desc, d.avail, d.used, eventIdx)
	if err != nil {
		d.t.Fatal(err)
	}
	return q
}

func (d *testDriver) alloc(n uint64) memory.GuestAddr {
	a := d.data
	d.data += memory.GuestAddr((n + 15) &^ 15)
	return a
}

// buf describes one buffer of a chain the test adds.
type buf struct {
	data  []byte // readable contents; for writable buffers only len matters
	n     uint32
	write bool
}

func (d *testDriver) putDesc(table memory.GuestAddr, i uint16, addr memory.GuestAddr, n uint32, flags, next uint16) {
	d.t.Helper()
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, uint64(addr))
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
	if err := d.mem.WriteAt(b, table+memory.GuestAddr(16*uint64(i))); err != nil {
		d.t.Fatal(err)
	}
}

// bufAddr allocates and fills the guest buffer for b.
func (d *testDriver) bufAddr(b buf) (memory.GuestAddr, uint32) {
	n := b.n
	if !b.write {
		n = uint32(len(b.data))
	}
	a := d.alloc(uint64(n))
	if !b.write {
		if err := d.mem.WriteAt(b.data, a); err != nil {
			d.t.Fatal(err)
		}
	}
	return a, n
}

// add puts a chain of direct descriptors in the table and returns its head.
// It does not publish it; see publish.
func (d *testDriver) add(bufs ...buf) uint16 {
	d.t.Helper()
	if len(bufs) > len(d.free) {
		d.t.Fatalf("driver: %d descriptors wanted, %d free", len(bufs), len(d.free))
	}
	idx := d.free[:len(bufs)]
	d.free = d.free[len(bufs):]
	for i, b := range bufs {
		a, n := d.bufAddr(b)
		var flags, next uint16
		if b.write {
			flags |= descFlagWrite
		}
		if i+1 < len(bufs) {
			flags |= descFlagNext
			next = idx[i+1]
		}
		d.putDesc(d.desc, idx[i], a, n, flags, next)
	}
	return idx[0]
}

// addIndirect puts the chain in an indirect table referenced by one
// descriptor.
func (d *testDriver) addIndirect(bufs ...buf) uint16 {
	d.t.Helper()
	table := d.alloc(16 * uint64(len(bufs)))
	for i, b := range bufs {
		a, n := d.bufAddr(b)
		var flags uint16
		if b.write {
			flags |= descFlagWrite
		}
		if i+1 < len(bufs) {
			flags |= descFlagNext
		}
		d.putDesc(table, uint16(i), a, n, flags, uint16(i+1))
	}
	head := d.free[0]
	d.free = d.free[1:]
	d.putDesc(d.desc, head, table, uint32(16*len(bufs)), descFlagIndirect, 0)
	return head
}

// publish makes heads available and bumps avail.idx.
func (d *testDriver) publish(heads ...uint16) {
	d.t.Helper()
	for _, h := range heads {
		slot := d.availIdx & (d.size - 1)
		d.put16(d.avail+4+memory.GuestAddr(2*uint64(slot)), h)
		d.availIdx++
	}
	d.put16(d.avail+2, d.availIdx)
}

func (d *testDriver) put16(a memory.GuestAddr, v uint16) {
	d.t.Helper()
	if err := d.mem.PutUint16(a, v); err != nil {
		d.t.Fatal(err)
	}
}

func (d *testDriver) get16(a memory.GuestAddr) uint16 {
	d.t.Helper()
	v, err := d.mem.Uint16(a)
	if err != nil {
		d.t.Fatal(err)
	}
	return v
}

// usedElem is one used ring entry as the driver reads it.
type usedElem struct {
	id  uint32
	len uint32
}

// reap returns the used entries since the last reap and frees their chains'
// descriptors (only direct chains' heads are tracked; tests that reuse
// descriptors re-add them explicitly).
func (d *testDriver) reap() []usedElem {
	d.t.Helper()
	idx := d.get16(d.used + 2)
	var out []usedElem
	for ; d.lastUsed != idx; d.lastUsed++ {
		slot := d.lastUsed & (d.size - 1)
		a := d.used + 4 + memory.GuestAddr(8*uint64(slot))
		id, err := d.mem.Uint32(a)
		if err != nil {
			d.t.Fatal(err)
		}
		n, err := d.mem.Uint32(a + 4)
		if err != nil {
			d.t.Fatal(err)
		}
		out = append(out, usedElem{id, n})
	}
	return out
}

// setUsedEvent writes used_event (event-idx: interrupt when used.idx passes it).
func (d *testDriver) setUsedEvent(v uint16) {
	d.put16(d.avail+4+memory.GuestAddr(2*uint64(d.size)), v)
}

// availEvent reads avail_event (event-idx: notify when avail.idx passes it).
func (d *testDriver) availEvent() uint16 {
	return d.get16(d.used + 4 + memory.GuestAddr(8*uint64(d.size)))
}
