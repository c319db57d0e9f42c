package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"kvmstack/netdev"
	"kvmstack/virtio"
	"kvmstack/vmm/memory"
)

// TestDeviceOnTap runs the device on a real TAP in a namespace of its own:
// an ARP request the guest transmits reaches the host kernel, and its reply
// comes back through the receive queue with a valid header.
func TestDeviceOnTap(t *testing.T) {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN driver: %v", err)
	}
	ns, err := netdev.NewNamespace()
	if errors.Is(err, os.ErrPermission) {
		t.Skipf("not allowed to create a network namespace: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := ns.CreateTap("tap0"); err != nil {
		t.Fatal(err)
	}
	tap, err := ns.OpenTap("tap0", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.AddAddress("tap0", "10.0.2.1/24"); err != nil {
		t.Fatal(err)
	}
	if err := ns.SetUp("tap0"); err != nil {
		t.Fatal(err)
	}
	mac := []byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	dev, err := NewWithBackend("tap0", tap, mac)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := memory.New(16 << 20)
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	// The workers read guest memory until Close returns.
	defer func() {
		dev.Close()
		mem.Close()
	}()
	rx, tx := newRing(t, mem, 0x100000, 256), newRing(t, mem, 0x400000, 256)
	kicks := [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}
	kick := func(q int) {
		select {
		case kicks[q] <- struct{}{}:
		default: // one pending kick stands for many
		}
	}
	features := dev.Features() | virtio.FeatureVersion1
	err = dev.Activate(virtio.Activation{
		Memory: mem, Features: features,
		Queues:    []*virtio.Queue{rx.queue(), tx.queue()},
		Kicks:     []<-chan struct{}{kicks[0], kicks[1]},
		Interrupt: func(int) error { return nil },
		Broken:    func(err error) { t.Errorf("broken: %v", err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 64 {
		rx.add(nil, []uint32{1526})
	}
	kick(rxQueue)

	arp := make([]byte, 42)
	copy(arp, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(arp[6:], mac)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	copy(arp[14:], []byte{0, 1, 8, 0, 6, 4, 0, 1})
	copy(arp[22:], mac)
	copy(arp[28:], []byte{10, 0, 2, 15})
	copy(arp[38:], []byte{10, 0, 2, 1})
	tx.add([][]byte{hdr(0, 0, 0, 0, 0), arp}, nil)
	kick(txQueue)
	tx.waitUsed(1)

	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		u := rx.waitUsed(1)[0]
		p := rx.written(u.head, u.len)
		rx.add(nil, []uint32{1526})
		kick(rxQueue)
		if binary.LittleEndian.Uint16(p[hdrNumBuffersOff:]) != 1 {
			t.Fatalf("num_buffers %d", binary.LittleEndian.Uint16(p[hdrNumBuffersOff:]))
		}
		f := p[HdrLen:]
		if len(f) < 42 || binary.BigEndian.Uint16(f[12:]) != 0x0806 {
			continue // IPv6 solicitations and the like
		}
		if !bytes.Equal(f[:6], mac) || binary.BigEndian.Uint16(f[20:]) != 2 || !bytes.Equal(f[28:32], []byte{10, 0, 2, 1}) {
			t.Fatalf("not the ARP reply: % x", f)
		}
		if s := dev.Stats(); s.TxPackets.Load() != 1 || s.RxPackets.Load() == 0 {
			t.Errorf("stats tx %d rx %d", s.TxPackets.Load(), s.RxPackets.Load())
		}
		return
	}
	t.Fatal("no ARP reply")
}
