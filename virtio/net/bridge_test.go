package net

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"kvmstack/netdev"
	"kvmstack/virtio"
	"kvmstack/vmm/memory"
)

// side is one device on a TAP in a namespace, with a fake driver.
type side struct {
	ns     *netdev.Namespace
	dev    *Device
	rx, tx *ring
	kicks  [2]chan struct{}
	irq    chan struct{}
}

func (s *side) kick(q int) {
	select {
	case s.kicks[q] <- struct{}{}:
	default:
	}
}

func newSide(t *testing.T, mem *memory.Memory, base memory.GuestAddr, addr string, mac byte) *side {
	t.Helper()
	ns, err := netdev.NewNamespace()
	if errors.Is(err, os.ErrPermission) {
		t.Skipf("not allowed to create a network namespace: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	if err := ns.CreateTap("tap0"); err != nil {
		t.Fatal(err)
	}
	tap, err := ns.OpenTap("tap0", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []func() error{func() error { return ns.AddAddress("tap0", addr) }, func() error { return ns.SetUp("tap0") }} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	dev, err := NewWithBackend("tap0", tap, []byte{0x52, 0x54, 0, 0, 0, mac})
	if err != nil {
		t.Fatal(err)
	}
	s := &side{ns: ns, dev: dev, irq: make(chan struct{}, 1)}
	s.rx, s.tx = newRing(t, mem, base, 256), newRing(t, mem, base+0x200000, 256)
	s.rx.data = base + 0x400000 // room for the receive buffers
	s.kicks = [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}
	err = dev.Activate(virtio.Activation{
		Memory: mem, Features: dev.Features() | virtio.FeatureVersion1,
		Queues: []*virtio.Queue{s.rx.queue(), s.tx.queue()},
		Kicks:  []<-chan struct{}{s.kicks[0], s.kicks[1]},
		Interrupt: func(int) error {
			select {
			case s.irq <- struct{}{}:
			default:
			}
			return nil
		},
		Broken: func(err error) { t.Errorf("device broken: %v", err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 250 {
		s.rx.add(nil, []uint32{1526})
	}
	s.kick(rxQueue)
	return s
}

// forward moves every packet a received into b's transmit queue, as a guest
// bridging two NICs would: mergeable buffers reassembled, the receive
// header turned into a transmit header (DATA_VALID and num_buffers
// cleared). It returns when stop closes.
func forward(t *testing.T, a, b *side, stop <-chan struct{}) {
	var pending []usedElem
	for {
		select {
		case <-stop:
			return
		case <-a.irq:
		case <-time.After(time.Millisecond):
		}
		for {
			idx, _ := a.rx.mem.Uint16(a.rx.used + 2)
			if idx == a.rx.lastUsed {
				break
			}
			e := a.rx.used + 4 + memory.GuestAddr(8*uint64(a.rx.lastUsed%a.rx.size))
			head, _ := a.rx.mem.Uint32(e)
			l, _ := a.rx.mem.Uint32(e + 4)
			a.rx.lastUsed++
			pending = append(pending, usedElem{uint16(head), l})
		}
		for len(pending) > 0 {
			first := a.rx.written(pending[0].head, pending[0].len)
			nb := int(binary.LittleEndian.Uint16(first[hdrNumBuffersOff:]))
			if nb == 0 || nb > len(pending) {
				if nb == 0 {
					t.Errorf("num_buffers 0")
					return
				}
				break
			}
			var pkt []byte
			for _, u := range pending[:nb] {
				pkt = append(pkt, a.rx.written(u.head, u.len)...)
				a.rx.free = append(a.rx.free, a.rx.descs[u.head]...)
			}
			pending = pending[nb:]
			pkt[hdrFlagsOff] &^= hdrFlagDataValid
			binary.LittleEndian.PutUint16(pkt[hdrNumBuffersOff:], 0)
			// Reap b's finished transmits before adding more.
			for {
				idx, _ := b.tx.mem.Uint16(b.tx.used + 2)
				if idx == b.tx.lastUsed {
					break
				}
				b.tx.waitUsed(1)
			}
			if len(b.tx.free) == 0 {
				b.tx.waitUsed(1)
			}
			// Transmit buffers live between the transmit ring and the
			// receive buffers: start over once all are back.
			if b.tx.data+memory.GuestAddr(len(pkt)) > b.rx.desc+0x400000 {
				for len(b.tx.free) < int(b.tx.size) {
					b.tx.waitUsed(1)
				}
				b.tx.data = b.tx.desc + 0x10000
			}
			b.tx.add([][]byte{pkt}, nil)
			b.kick(txQueue)
		}
		if len(a.rx.free) > 32 {
			for range len(a.rx.free) {
				a.rx.add(nil, []uint32{1526})
			}
			a.kick(rxQueue)
		}
	}
}

// TestBridgeTCP joins two namespaces through two devices and a forwarding
// "guest": the kernels on both sides run TCP with checksum offload and TSO
// through the devices, so super-packets cross the receive path (merged
// buffers) and the transmit path (GSO headers) in both directions.
func TestBridgeTCP(t *testing.T) {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN driver: %v", err)
	}
	if testing.Short() {
		t.Skip("short")
	}
	mem, err := memory.New(256 << 20)
	if err != nil {
		t.Fatal(err)
	}
	a := newSide(t, mem, 0x1000000, "10.0.9.1/24", 1)
	b := newSide(t, mem, 0x8000000, "10.0.9.2/24", 2)
	stop := make(chan struct{})
	done := make(chan struct{}, 2)
	go func() { forward(t, a, b, stop); done <- struct{}{} }()
	go func() { forward(t, b, a, stop); done <- struct{}{} }()
	defer func() {
		close(stop)
		<-done
		<-done
		a.dev.Close()
		b.dev.Close()
		mem.Close()
	}()
	ln, err := b.ns.Listen("tcp", "10.0.9.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 8 << 20
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	want := sha256.Sum256(data)
	got := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- [32]byte{}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		io.CopyN(h, c, size)
		var s [32]byte
		copy(s[:], h.Sum(nil))
		got <- s
	}()
	c, err := a.ns.Dial("tcp", "10.0.9.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != want {
		t.Fatalf("sha256 differs after %v (a: tx %d rx %d drop %d/%d; b: tx %d rx %d drop %d/%d)", time.Since(start),
			a.dev.stats.TxPackets.Load(), a.dev.stats.RxPackets.Load(), a.dev.stats.TxDropped.Load(), a.dev.stats.RxDropped.Load(),
			b.dev.stats.TxPackets.Load(), b.dev.stats.RxPackets.Load(), b.dev.stats.TxDropped.Load(), b.dev.stats.RxDropped.Load())
	}
	el := time.Since(start)
	t.Logf("8 MiB in %v; a sent %d packets (%d bytes: %d bytes per packet)", el, a.dev.stats.TxPackets.Load(), a.dev.stats.TxBytes.Load(), a.dev.stats.TxBytes.Load()/max(1, a.dev.stats.TxPackets.Load()))
}
