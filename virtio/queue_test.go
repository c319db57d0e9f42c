package virtio

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"kvmstack/vmm/memory"
)

func TestQueueChainRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		indirect bool
		bufs     []buf
	}{
		{"oneReadable", false, []buf{{data: []byte("hello")}}},
		{"oneWritable", false, []buf{{n: 64, write: true}}},
		{"readThenWrite", false, []buf{{data: []byte("head")}, {data: []byte("er")}, {n: 3, write: true}, {n: 100, write: true}}},
		{"indirect", true, []buf{{data: []byte("abc")}, {data: []byte("defg")}, {n: 7, write: true}}},
		{"indirectWriteOnly", true, []buf{{n: 1, write: true}, {n: 4096, write: true}}},
		{"emptyBuffer", false, []buf{{data: []byte{}}, {data: []byte("x")}, {n: 0, write: true}, {n: 2, write: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDriver(t, 8)
			q := d.queue(false)
			var head uint16
			if tt.indirect {
				head = d.addIndirect(tt.bufs...)
			} else {
				head = d.add(tt.bufs...)
			}
			d.publish(head)
			c, err := q.Pop()
			if err != nil || c == nil {
				t.Fatalf("Pop() = %v, %v", c, err)
			}
			if c.Head != head || len(c.Descs) != len(tt.bufs) {
				t.Fatalf("chain head %d with %d descs, want %d with %d", c.Head, len(c.Descs), head, len(tt.bufs))
			}
			var wantRead []byte
			var wantWritable uint64
			for _, b := range tt.bufs {
				if b.write {
					wantWritable += uint64(b.n)
				} else {
					wantRead = append(wantRead, b.data...)
				}
			}
			got, err := io.ReadAll(c.Reader(d.mem))
			if err != nil || !bytes.Equal(got, wantRead) {
				t.Fatalf("readable part = %q, %v; want %q", got, err, wantRead)
			}
			if c.ReadableLen() != uint64(len(wantRead)) || c.WritableLen() != wantWritable {
				t.Fatalf("lengths %d/%d, want %d/%d", c.ReadableLen(), c.WritableLen(), len(wantRead), wantWritable)
			}
			payload := bytes.Repeat([]byte{0xA5}, int(wantWritable))
			if n, err := c.Writer(d.mem).Write(payload); err != nil || n != len(payload) {
				t.Fatalf("Write = %d, %v", n, err)
			}
			if _, err := c.Writer(d.mem).Write(append(payload, 1)); !errors.Is(err, io.ErrShortWrite) {
				t.Fatalf("overlong Write error = %v, want io.ErrShortWrite", err)
			}
			wbufs, err := c.Buffers(d.mem, true)
			if err != nil {
				t.Fatal(err)
			}
			var seen []byte
			for _, b := range wbufs {
				seen = append(seen, b...)
			}
			if !bytes.Equal(seen[:len(payload)], payload) {
				t.Fatalf("writable buffers do not hold what Writer wrote")
			}
			if err := q.Push(c.Head, uint32(wantWritable)); err != nil {
				t.Fatal(err)
			}
			used := d.reap()
			if len(used) != 1 || used[0] != (usedElem{uint32(head), uint32(wantWritable)}) {
				t.Fatalf("used = %v", used)
			}
			if c, err := q.Pop(); c != nil || err != nil {
				t.Fatalf("Pop on empty queue = %v, %v", c, err)
			}
		})
	}
}

// TestQueueWrapAround runs more than 2^16 chains through a small queue so the
// free-running 16-bit indexes wrap, with several chains in flight at once.
func TestQueueWrapAround(t *testing.T) {
	const size = 4
	d := newTestDriver(t, size)
	q := d.queue(true)
	bufAddr := d.alloc(16)
	for i := range uint16(size) {
		d.putDesc(d.desc, i, bufAddr, 8, descFlagWrite, 0)
	}
	total := 0
	for round := 0; total < 70000; round++ {
		batch := []uint16{0, 1, 2, 3}[:1+round%size]
		d.publish(batch...)
		for _, want := range batch {
			c, err := q.Pop()
			if err != nil || c == nil || c.Head != want {
				t.Fatalf("after %d chains: Pop() = %+v, %v; want head %d", total, c, err, want)
			}
		}
		for i := len(batch) - 1; i >= 0; i-- {
			if err := q.Push(batch[i], uint32(total)); err != nil {
				t.Fatal(err)
			}
		}
		used := d.reap()
		if len(used) != len(batch) {
			t.Fatalf("after %d chains: %d used entries, want %d", total, len(used), len(batch))
		}
		for i, u := range used {
			if u.id != uint32(batch[len(batch)-1-i]) {
				t.Fatalf("used order %v, want reverse of %v", used, batch)
			}
		}
		total += len(batch)
	}
	if q.lastAvail != uint16(total) || q.usedIdx != uint16(total) {
		t.Fatalf("indexes %d/%d, want %d", q.lastAvail, q.usedIdx, uint16(total))
	}
}

func TestQueueEventIdx(t *testing.T) {
	d := newTestDriver(t, 8)
	q := d.queue(true)
	heads := []uint16{d.add(buf{n: 1, write: true}), d.add(buf{n: 1, write: true}), d.add(buf{n: 1, write: true})}
	d.publish(heads...)
	// Interrupt once used.idx moves past used_event = 1 (i.e. reaches 2).
	d.setUsedEvent(1)
	steps := []struct {
		push uint16
		want bool
	}{{heads[0], false}, {heads[1], true}, {heads[2], false}}
	for range steps {
		if _, err := q.Pop(); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range steps {
		if err := q.Push(s.push, 1); err != nil {
			t.Fatal(err)
		}
		if got := q.NeedInterrupt(); got != s.want {
			t.Fatalf("push %d: NeedInterrupt = %v, want %v", i, got, s.want)
		}
	}
	if q.NeedInterrupt() {
		t.Fatal("NeedInterrupt without a new push")
	}
	// A batch that jumps over used_event still interrupts.
	more := []uint16{d.add(buf{n: 1, write: true}), d.add(buf{n: 1, write: true})}
	d.publish(more...)
	d.setUsedEvent(3)
	for range more {
		if _, err := q.Pop(); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range more {
		if err := q.Push(h, 1); err != nil {
			t.Fatal(err)
		}
	}
	if !q.NeedInterrupt() {
		t.Fatal("batch crossing used_event did not interrupt")
	}

	// avail_event follows what the device consumed when it re-arms.
	pending, err := q.EnableNotifications()
	if err != nil || pending {
		t.Fatalf("EnableNotifications = %v, %v on an empty queue", pending, err)
	}
	if got := d.availEvent(); got != 5 {
		t.Fatalf("avail_event = %d, want 5", got)
	}
	d.publish(d.add(buf{n: 1, write: true}))
	if more, err := q.EnableNotifications(); err != nil || !more {
		t.Fatalf("EnableNotifications = %v, %v with a chain pending", more, err)
	}
}

func TestQueueFlagSuppression(t *testing.T) {
	d := newTestDriver(t, 8)
	q := d.queue(false)
	if err := q.DisableNotifications(); err != nil {
		t.Fatal(err)
	}
	if got := d.get16(d.used); got != usedFlagNoNotify {
		t.Fatalf("used.flags = %d after DisableNotifications", got)
	}
	if more, err := q.EnableNotifications(); err != nil || more {
		t.Fatalf("EnableNotifications = %v, %v", more, err)
	}
	if got := d.get16(d.used); got != 0 {
		t.Fatalf("used.flags = %d after EnableNotifications", got)
	}
	h := d.add(buf{n: 1, write: true})
	d.publish(h)
	if _, err := q.Pop(); err != nil {
		t.Fatal(err)
	}
	d.put16(d.avail, availFlagNoIntr)
	if err := q.Push(h, 0); err != nil {
		t.Fatal(err)
	}
	if q.NeedInterrupt() {
		t.Fatal("interrupt despite VRING_AVAIL_F_NO_INTERRUPT")
	}
	h = d.add(buf{n: 1, write: true})
	d.publish(h)
	if _, err := q.Pop(); err != nil {
		t.Fatal(err)
	}
	d.put16(d.avail, 0)
	if err := q.Push(h, 0); err != nil {
		t.Fatal(err)
	}
	if !q.NeedInterrupt() {
		t.Fatal("no interrupt with flags clear")
	}
}

func TestQueuePushErrors(t *testing.T) {
	d := newTestDriver(t, 8)
	q := d.queue(false)
	h := d.add(buf{n: 1, write: true})
	if err := q.Push(h, 0); !errors.Is(err, ErrNotInFlight) {
		t.Fatalf("Push before Pop: %v", err)
	}
	if err := q.Push(100, 0); !errors.Is(err, ErrNotInFlight) {
		t.Fatalf("Push of an out-of-range head: %v", err)
	}
	d.publish(h)
	if _, err := q.Pop(); err != nil {
		t.Fatal(err)
	}
	if err := q.Push(h, 0); err != nil {
		t.Fatal(err)
	}
	if err := q.Push(h, 0); !errors.Is(err, ErrNotInFlight) {
		t.Fatalf("second Push: %v", err)
	}
}

func TestNewQueueRejects(t *testing.T) {
	mem, err := memory.New(testRAM)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	tests := []struct {
		name              string
		size              uint16
		desc, driver, dev memory.GuestAddr
	}{
		{"zeroSize", 0, 0x1000, 0x2000, 0x3000},
		{"notPowerOfTwo", 3, 0x1000, 0x2000, 0x3000},
		{"tooBig", 65535, 0x1000, 0x2000, 0x3000},
		{"descMisaligned", 8, 0x1008, 0x2000, 0x3000},
		{"driverMisaligned", 8, 0x1000, 0x2001, 0x3000},
		{"deviceMisaligned", 8, 0x1000, 0x2000, 0x3002},
		{"descOutsideRAM", 8, testRAM - 64, 0x2000, 0x3000},
		{"driverInHole", 8, 0x1000, memory.HoleStart, 0x3000},
		{"deviceWraps", 8, 0x1000, 0x2000, 0xFFFF_FFFF_FFFF_FFF0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewQueue(mem, tt.size, tt.desc, tt.driver, tt.dev, false); !errors.Is(err, ErrMalformed) {
				t.Fatalf("NewQueue error = %v, want ErrMalformed", err)
			}
		})
	}
}

// TestQueueMalformed corrupts a ring in each way a hostile driver could and
// checks that Pop reports ErrMalformed without consuming anything.
func TestQueueMalformed(t *testing.T) {
	const size = 512
	tests := []struct {
		name    string
		corrupt func(d *testDriver)
	}{
		{"availIdxTooFarAhead", func(d *testDriver) {
			d.publish(d.add(buf{n: 1, write: true}))
			d.put16(d.avail+2, size+1)
		}},
		{"headOutOfRange", func(d *testDriver) {
			d.put16(d.avail+4, size)
			d.put16(d.avail+2, 1)
		}},
		{"nextOutOfRange", func(d *testDriver) {
			d.putDesc(d.desc, 0, 0x200000, 8, descFlagNext, size+7)
			d.publish(0)
		}},
		{"selfLoop", func(d *testDriver) {
			d.putDesc(d.desc, 0, 0x200000, 8, descFlagNext, 0)
			d.publish(0)
		}},
		{"twoDescLoop", func(d *testDriver) {
			d.putDesc(d.desc, 0, 0x200000, 8, descFlagNext, 1)
			d.putDesc(d.desc, 1, 0x200000, 8, descFlagNext, 0)
			d.publish(0)
		}},
		{"bufferOutsideRAM", func(d *testDriver) {
			d.putDesc(d.desc, 0, testRAM-4, 8, 0, 0)
			d.publish(0)
		}},
		{"bufferInHole", func(d *testDriver) {
			d.putDesc(d.desc, 0, memory.HoleStart+0x1000, 8, descFlagWrite, 0)
			d.publish(0)
		}},
		{"bufferAddressWraps", func(d *testDriver) {
			d.putDesc(d.desc, 0, 0xFFFF_FFFF_FFFF_FFF0, 0x20, descFlagWrite, 0)
			d.publish(0)
		}},
		{"readableAfterWritable", func(d *testDriver) {
			d.putDesc(d.desc, 0, 0x200000, 8, descFlagWrite|descFlagNext, 1)
			d.putDesc(d.desc, 1, 0x200000, 8, 0, 0)
			d.publish(0)
		}},
		{"tooManyBytes", func(d *testDriver) {
			// 300 descriptors all naming the same 15 MiB: 4.4 GiB in total.
			for i := range uint16(300) {
				d.putDesc(d.desc, i, 0x10000, 15<<20, descFlagWrite|descFlagNext, i+1)
			}
			d.putDesc(d.desc, 300, 0x10000, 15<<20, descFlagWrite, 0)
			d.publish(0)
		}},
		{"indirectInIndirect", func(d *testDriver) {
			table := d.alloc(32)
			d.putDesc(table, 0, 0x200000, 8, descFlagNext, 1)
			d.putDesc(table, 1, table, 32, descFlagIndirect, 0)
			d.putDesc(d.desc, 0, table, 32, descFlagIndirect, 0)
			d.publish(0)
		}},
		{"indirectWithNext", func(d *testDriver) {
			table := d.alloc(16)
			d.putDesc(table, 0, 0x200000, 8, 0, 0)
			d.putDesc(d.desc, 0, table, 16, descFlagIndirect|descFlagNext, 1)
			d.putDesc(d.desc, 1, 0x200000, 8, 0, 0)
			d.publish(0)
		}},
		{"indirectEmpty", func(d *testDriver) {
			d.putDesc(d.desc, 0, 0x200000, 0, descFlagIndirect, 0)
			d.publish(0)
		}},
		{"indirectOddLength", func(d *testDriver) {
			d.putDesc(d.desc, 0, 0x200000, 24, descFlagIndirect, 0)
			d.publish(0)
		}},
		{"indirectTooBig", func(d *testDriver) {
			d.putDesc(d.desc, 0, 0x200000, 16*(MaxIndirectDescs+1), descFlagIndirect, 0)
			d.publish(0)
		}},
		{"indirectTableOutsideRAM", func(d *testDriver) {
			d.putDesc(d.desc, 0, testRAM-16, 32, descFlagIndirect, 0)
			d.publish(0)
		}},
		{"indirectLoop", func(d *testDriver) {
			table := d.alloc(32)
			d.putDesc(table, 0, 0x200000, 8, descFlagNext, 1)
			d.putDesc(table, 1, 0x200000, 8, descFlagNext, 0)
			d.putDesc(d.desc, 0, table, 32, descFlagIndirect, 0)
			d.publish(0)
		}},
		{"indirectNextOutOfTable", func(d *testDriver) {
			table := d.alloc(32)
			d.putDesc(table, 0, 0x200000, 8, descFlagNext, 2)
			d.putDesc(d.desc, 0, table, 32, descFlagIndirect, 0)
			d.publish(0)
		}},
		{"headAvailableTwice", func(d *testDriver) {
			h := d.add(buf{n: 1, write: true})
			d.publish(h, h)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDriver(t, size)
			q := d.queue(true)
			tt.corrupt(d)
			var err error
			for range 2 {
				var c *Chain
				if c, err = q.Pop(); err != nil {
					break
				}
				if c == nil {
					t.Fatal("Pop found nothing and no error")
				}
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Pop error = %v, want ErrMalformed", err)
			}
			last := q.lastAvail
			if _, err2 := q.Pop(); !errors.Is(err2, ErrMalformed) || q.lastAvail != last {
				t.Fatalf("second Pop = %v, lastAvail %d -> %d: a bad chain must not be consumed", err2, last, q.lastAvail)
			}
		})
	}
}

// TestQueueLongValidChain: a chain using every descriptor of the table is
// legal and must not be mistaken for a loop.
func TestQueueLongValidChain(t *testing.T) {
	const size = 16
	d := newTestDriver(t, size)
	q := d.queue(false)
	bufs := make([]buf, size)
	for i := range bufs {
		bufs[i] = buf{data: []byte{byte(i)}}
	}
	d.publish(d.add(bufs...))
	c, err := q.Pop()
	if err != nil || len(c.Descs) != size {
		t.Fatalf("Pop = %+v, %v", c, err)
	}
}
