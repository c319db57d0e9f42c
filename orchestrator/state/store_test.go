package state

import (
	"bytes"
	"context"
	"testing"
	"time"
)

func TestBlockingWakesOnWriteAndRestore(t *testing.T) {
	s := New()
	write := func(idx uint64, name string) {
		t.Helper()
		if err := s.Write(idx, func(w *WriteTxn) error { return w.CreateProject(&Project{ID: "p-" + name, Name: name}) }); err != nil {
			t.Fatal(err)
		}
	}
	write(5, "a")
	projects := func(r *ReadTxn) (uint64, error) { _, err := r.Projects(); return r.Index("projects"), err }

	tests := []struct {
		name   string
		change func()
		want   uint64
	}{
		{"write to the table", func() { write(7, "b") }, 7},
		{"restore of a newer state", func() {
			other := New()
			if err := other.Write(9, func(w *WriteTxn) error { return w.CreateProject(&Project{ID: "p-z", Name: "z"}) }); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := other.WriteSnapshot(&buf); err != nil {
				t.Fatal(err)
			}
			if err := s.Restore(&buf); err != nil {
				t.Fatal(err)
			}
		}, 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := s.Read(nil)
			min := r.Index("projects")
			got := make(chan uint64, 1)
			go func() {
				idx, _ := s.Blocking(context.Background(), min, projects)
				got <- idx
			}()
			select {
			case idx := <-got:
				t.Fatalf("returned %d before any change", idx)
			case <-time.After(100 * time.Millisecond):
			}
			tc.change()
			select {
			case idx := <-got:
				if idx != tc.want {
					t.Fatalf("woke with index %d, want %d", idx, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("blocking query not woken")
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if idx, err := s.Blocking(ctx, 100, projects); err != nil || idx != 9 {
		t.Fatalf("timeout returns current index: %d %v", idx, err)
	}
}

func TestHostArithmetic(t *testing.T) {
	h := &Host{VCPUs: 4, MemoryMB: 1000, DiskGB: 10, CPURatio: 2, RAMRatio: 1.5, DiskRatio: 1, UsedVCPUs: 7, UsedMemoryMB: 1500}
	tests := []struct {
		r    Resources
		fits bool
	}{
		{Resources{VCPUs: 1}, true},
		{Resources{VCPUs: 2}, false},
		{Resources{VCPUs: 1, MemoryMB: 1}, false},
		{Resources{DiskGB: 10}, true},
		{Resources{DiskGB: 11}, false},
	}
	for _, tc := range tests {
		if h.Fits(tc.r) != tc.fits {
			t.Errorf("Fits(%+v) = %v", tc.r, !tc.fits)
		}
	}
	if h.Overcommitted() {
		t.Fatal("host at exactly capacity × ratio reported over-committed")
	}
	h.UsedMemoryMB++
	if !h.Overcommitted() {
		t.Fatal("over-commit not detected")
	}
	now := time.Now()
	h.LastHeartbeat = now.Add(-time.Minute)
	if h.Up(now, 30*time.Second) || !h.Up(now, 2*time.Minute) {
		t.Fatal("heartbeat TTL wrong")
	}
}
