package virtio

import (
	"errors"
	"testing"
)

func TestQueueRewind(t *testing.T) {
	tests := []struct {
		name     string
		popped   int   // chains popped of the five published
		pushed   []int // indexes (in pop order) pushed before the rewind
		rewound  int
		wantErr  bool
		nextHead int // pop order index the next Pop returns, -1: none left
	}{
		{"nothing in flight", 3, []int{0, 1, 2}, 0, false, 3},
		{"held receive buffers", 3, []int{0}, 2, false, 1},
		{"all held", 5, nil, 5, false, 0},
		{"completed out of order", 3, []int{1}, 0, true, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDriver(t, 16)
			q := d.queue(true)
			var heads []uint16
			for i := range 5 {
				heads = append(heads, d.add(buf{data: []byte{byte(i), 1, 2}}, buf{write: true, n: 16}))
			}
			d.publish(heads...)
			for i := range tt.popped {
				c, err := q.Pop()
				if err != nil || c == nil || c.Head != heads[i] {
					t.Fatalf("pop %d: %+v, %v", i, c, err)
				}
			}
			for _, i := range tt.pushed {
				if err := q.Push(heads[i], 4); err != nil {
					t.Fatal(err)
				}
			}
			inflight := q.InFlight()
			n, err := q.Rewind()
			if tt.wantErr {
				if !errors.Is(err, ErrRewind) || n != 0 || q.InFlight() != inflight {
					t.Fatalf("Rewind = %d, %v with %d in flight after; want ErrRewind and no change", n, err, q.InFlight())
				}
			} else if err != nil || n != tt.rewound || q.InFlight() != 0 {
				t.Fatalf("Rewind = %d, %v (%d in flight after); want %d", n, err, q.InFlight(), tt.rewound)
			}
			// The chains come back in their first order, then the rest.
			for i := tt.nextHead; i >= 0 && i < 5; i++ {
				c, err := q.Pop()
				if err != nil || c == nil || c.Head != heads[i] {
					t.Fatalf("pop after rewind, chain %d: %+v, %v; want head %d", i, c, err, heads[i])
				}
				if c.ReadableLen() != 3 || c.WritableLen() != 16 {
					t.Fatalf("chain re-read as %d/%d bytes", c.ReadableLen(), c.WritableLen())
				}
				if err := q.Push(c.Head, 16); err != nil {
					t.Fatal(err)
				}
			}
			if c, err := q.Pop(); c != nil || err != nil {
				t.Fatalf("extra chain %+v, %v", c, err)
			}
		})
	}
}

func TestQueueRewindCorruptRing(t *testing.T) {
	d := newTestDriver(t, 4)
	q := d.queue(false)
	h0 := d.add(buf{write: true, n: 8})
	h1 := d.add(buf{write: true, n: 8})
	d.publish(h0, h1)
	for range 2 {
		if c, err := q.Pop(); c == nil || err != nil {
			t.Fatal(c, err)
		}
	}
	// A hostile driver rewrites an available entry it handed over.
	d.put16(d.avail+4+2, 3)
	if _, err := q.Rewind(); !errors.Is(err, ErrRewind) {
		t.Fatalf("Rewind over a rewritten ring: %v, want ErrRewind", err)
	}
	if q.InFlight() != 2 {
		t.Fatalf("%d in flight after a refused rewind", q.InFlight())
	}
}

func TestQueueCounters(t *testing.T) {
	d := newTestDriver(t, 8)
	q := d.queue(true)
	a := d.add(buf{data: make([]byte, 100)}, buf{write: true, n: 50})
	b := d.add(buf{data: make([]byte, 7)})
	c := d.add(buf{write: true, n: 4096})
	d.publish(a, b, c)
	for range 3 {
		if ch, err := q.Pop(); ch == nil || err != nil {
			t.Fatal(ch, err)
		}
	}
	if got := q.Counters(); got != (QueueCounters{}) {
		t.Fatalf("counters before any push: %+v", got)
	}
	if err := q.Push(a, 50); err != nil {
		t.Fatal(err)
	}
	// c is held and rewound: counted once, when finally pushed.
	if err := q.PushBatch([]Used{{Head: b, Written: 0}}); err != nil {
		t.Fatal(err)
	}
	if n, err := q.Rewind(); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	if ch, err := q.Pop(); ch == nil || err != nil || ch.Head != c {
		t.Fatal(ch, err)
	}
	if err := q.Push(c, 1000); err != nil {
		t.Fatal(err)
	}
	want := QueueCounters{Chains: 3, DeviceRead: 107, DeviceWritten: 1050}
	if got := q.Counters(); got != want {
		t.Fatalf("counters %+v, want %+v", got, want)
	}
	if sum := want.Add(want); sum != (QueueCounters{6, 214, 2100}) {
		t.Fatalf("Add = %+v", sum)
	}
}
