package virtio

import (
	"errors"
	"testing"
)

// TestPushBatch checks that a batch lands in order with one used-index
// update, and that a bad head leaves the ring and the in-flight set alone.
func TestPushBatch(t *testing.T) {
	d := newTestDriver(t, 8)
	q := d.queue(false)
	var heads []uint16
	for range 4 {
		heads = append(heads, d.add(buf{n: 100, write: true}))
	}
	d.publish(heads...)
	for range heads {
		if c, err := q.Pop(); err != nil || c == nil {
			t.Fatalf("Pop = %v, %v", c, err)
		}
	}
	tests := []struct {
		name  string
		batch []Used
		err   error
		want  []usedElem
	}{
		{"unknown head", []Used{{heads[0], 1}, {7, 2}}, ErrNotInFlight, nil},
		{"head twice", []Used{{heads[1], 1}, {heads[1], 2}}, ErrNotInFlight, nil},
		{"three", []Used{{heads[2], 30}, {heads[0], 10}, {heads[1], 20}}, nil,
			[]usedElem{{uint32(heads[2]), 30}, {uint32(heads[0]), 10}, {uint32(heads[1]), 20}}},
		{"empty", nil, nil, nil},
		{"last", []Used{{heads[3], 40}}, nil, []usedElem{{uint32(heads[3]), 40}}},
		{"again", []Used{{heads[3], 40}}, ErrNotInFlight, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := d.get16(d.used + 2)
			err := q.PushBatch(tt.batch)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("PushBatch = %v, want %v", err, tt.err)
			}
			got := d.reap()
			if len(got) != len(tt.want) {
				t.Fatalf("used %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("used[%d] = %v, want %v", i, got[i], tt.want[i])
				}
			}
			if after := d.get16(d.used + 2); after != before+uint16(len(tt.want)) {
				t.Errorf("used.idx %d -> %d", before, after)
			}
		})
	}
}
