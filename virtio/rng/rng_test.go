package rng

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"kvmstack/virtio"
	"kvmstack/vmm/memory"
)

func TestIdentity(t *testing.T) {
	d := New()
	if d.Type() != virtio.DeviceRNG || d.Features() != 0 || len(d.QueueSizes()) != 1 || d.QueueSizes()[0] != QueueSize {
		t.Fatalf("type %v features %#x queues %v", d.Type(), d.Features(), d.QueueSizes())
	}
	b := []byte{1, 2, 3, 4}
	d.ReadConfig(0, b)
	if !bytes.Equal(b, make([]byte, 4)) {
		t.Fatalf("config space reads % x", b)
	}
	if err := d.Activate(virtio.Activation{}); err == nil {
		t.Fatal("Activate without queues succeeded")
	}
	// A driver that never enabled the queue gets a device that does nothing.
	if err := d.Activate(virtio.Activation{Queues: []*virtio.Queue{nil}, Kicks: []<-chan struct{}{nil}}); err != nil {
		t.Fatal(err)
	}
	d.Reset()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestFill(t *testing.T) {
	mem, err := memory.New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	tests := []struct {
		name  string
		descs []virtio.Desc
		fail  bool
		want  uint32
	}{
		{"twoBuffers", []virtio.Desc{{Addr: 0x10000, Len: 16}, {Addr: 0x10000 + 16, Len: 48, Write: true}, {Addr: 0x20000, Len: 64, Write: true}}, false, 112},
		{"capped", []virtio.Desc{{Addr: 0x100000, Len: 1 << 20, Write: true}}, false, maxRequest},
		{"hostFailure", []virtio.Desc{{Addr: 0x30000, Len: 64, Write: true}}, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New()
			if tt.fail {
				d.getrandom = func([]byte) (int, error) { return 0, unix.EIO }
			}
			n, err := d.fill(virtio.Activation{Memory: mem}, &virtio.Chain{Descs: tt.descs})
			if err != nil || n != tt.want {
				t.Fatalf("fill = %d, %v; want %d", n, err, tt.want)
			}
		})
	}
	// The readable header is never written.
	hdr := make([]byte, 16)
	if err := mem.ReadAt(hdr, 0x10000); err != nil || !bytes.Equal(hdr, make([]byte, 16)) {
		t.Fatalf("device-readable buffer was written: % x %v", hdr, err)
	}
	// 48 random bytes are all zero with probability 2^-384.
	got := make([]byte, 48)
	if err := mem.ReadAt(got, 0x10000+16); err != nil || bytes.Equal(got, make([]byte, 48)) {
		t.Fatalf("writable buffer not filled: % x %v", got, err)
	}
}
