package virtio

import (
	"errors"
	"testing"
)

func TestRestoreQueueContinuesWhereTheDeviceStood(t *testing.T) {
	tests := []struct {
		name   string
		pushed int // of the 3 published chains, how many the old device finished
		popped int // how many it popped (held ones were never used)
	}{
		{"idle", 0, 0},
		{"all done", 3, 3},
		{"two done", 2, 2},
		{"one done, one held", 1, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDriver(t, 8)
			var heads []uint16
			for i := range 3 {
				heads = append(heads, d.add(buf{data: []byte{byte(i)}}))
			}
			d.publish(heads...)
			old := d.queue(false)
			for i := range tc.popped {
				c, err := old.Pop()
				if err != nil || c == nil || c.Head != heads[i] {
					t.Fatalf("pop %d: %+v, %v", i, c, err)
				}
				if i < tc.pushed {
					if err := old.Push(c.Head, 0); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, err := old.Rewind(); err != nil {
				t.Fatal(err)
			}
			last, used := old.Position()
			if last != used || used != uint16(tc.pushed) {
				t.Fatalf("Position after Rewind = %d, %d; want %d, %d", last, used, tc.pushed, tc.pushed)
			}
			st := QueueState{Size: 8, Enabled: true, Desc: uint64(d.desc), Driver: uint64(d.avail), Device: uint64(d.used), LastAvail: last, UsedIdx: used}
			q, err := RestoreQueue(d.mem, st, false)
			if err != nil {
				t.Fatal(err)
			}
			for i := tc.pushed; i < 3; i++ {
				c, err := q.Pop()
				if err != nil || c == nil || c.Head != heads[i] {
					t.Fatalf("restored pop: %+v, %v; want head %d", c, err, heads[i])
				}
				if err := q.Push(c.Head, 1); err != nil {
					t.Fatal(err)
				}
			}
			if c, err := q.Pop(); c != nil || err != nil {
				t.Fatalf("restored queue pops past the ring: %+v, %v", c, err)
			}
			got := d.reap()
			if len(got) != 3 {
				t.Fatalf("driver reaped %d chains, want 3 (none lost, none twice): %+v", len(got), got)
			}
			for i, u := range got {
				if u.id != uint32(heads[i]) {
					t.Fatalf("used entry %d names %d, want %d", i, u.id, heads[i])
				}
			}
			if !q.NeedInterrupt() && tc.pushed < 3 {
				t.Fatal("no interrupt for chains used after restore")
			}
		})
	}
}

func TestRestoreQueueRefusesBadState(t *testing.T) {
	d := newTestDriver(t, 8)
	good := QueueState{Size: 8, Desc: uint64(d.desc), Driver: uint64(d.avail), Device: uint64(d.used)}
	tests := []struct {
		name string
		mut  func(*QueueState)
	}{
		{"chains in flight", func(s *QueueState) { s.LastAvail = 2 }},
		{"size not a power of two", func(s *QueueState) { s.Size = 6 }},
		{"ring outside RAM", func(s *QueueState) { s.Device = 1 << 40 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := good
			tc.mut(&st)
			if _, err := RestoreQueue(d.mem, st, true); !errors.Is(err, ErrMalformed) {
				t.Fatalf("RestoreQueue = %v, want ErrMalformed", err)
			}
		})
	}
}
