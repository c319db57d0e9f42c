package netdev

import (
	"bytes"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

func TestSocketPairKeepsPacketsAndGathers(t *testing.T) {
	a, b, err := SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	tests := []struct {
		name string
		bufs [][]byte
	}{
		{"one", [][]byte{[]byte("hello")}},
		{"gathered", [][]byte{[]byte("head"), {}, []byte("-body-"), []byte("tail")}},
		{"large", [][]byte{bytes.Repeat([]byte{7}, 65000)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := bytes.Join(tt.bufs, nil)
			n, err := a.WritePacket(tt.bufs)
			if err != nil || n != len(want) {
				t.Fatalf("WritePacket = %d, %v; want %d", n, err, len(want))
			}
			// Scatter into two buffers to see both filled in order.
			p1, p2 := make([]byte, 3), make([]byte, 70000)
			n, err = b.ReadPacket([][]byte{p1, p2}, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := append(append([]byte{}, p1...), p2...)[:n]
			if !bytes.Equal(got, want) {
				t.Fatalf("read %d bytes %q..., want %d", n, got[:min(n, 16)], len(want))
			}
		})
	}
}

func TestReadPacketBeforeWaitAndDeadline(t *testing.T) {
	a, b, err := SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	var waits atomic.Int32
	got := make(chan error, 1)
	go func() {
		_, err := b.ReadPacket([][]byte{make([]byte, 16)}, func() { waits.Add(1) })
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := b.SetDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked read ended with %v, want a deadline error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("deadline did not wake the reader")
	}
	if waits.Load() == 0 {
		t.Error("beforeWait was not called before parking")
	}
	// Cleared deadline: reads work again and a waiting packet needs no wait.
	if err := b.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WritePacket([][]byte{[]byte("x")}); err != nil {
		t.Fatal(err)
	}
	waits.Store(0)
	if n, err := b.ReadPacket([][]byte{make([]byte, 16)}, func() { waits.Add(1) }); err != nil || n != 1 {
		t.Fatalf("ReadPacket = %d, %v", n, err)
	}
	if waits.Load() != 0 {
		t.Error("beforeWait called although a packet was waiting")
	}
}

func TestPacketFileRejects(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewPacketFile(f); err == nil {
		t.Error("NewPacketFile accepted a blocking descriptor")
	}
	f.Close()
	a, b, err := SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	if _, err := a.WritePacket(make([][]byte, MaxIOVecs+1)); !errors.Is(err, ErrTooManyBuffers) {
		t.Errorf("WritePacket with %d buffers: %v", MaxIOVecs+1, err)
	}
}
