package net

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"
)

// TestReceiveStream pushes a stream of packets of mixed sizes through the
// receive path while a driver goroutine reaps, reassembles mergeable
// packets and refills buffers the way Linux does (in batches, after
// interrupts or a short poll). Every packet must arrive whole and in order.
func TestReceiveStream(t *testing.T) {
	h := newHarness(t, FeatureMrgRxBuf|FeatureGuestCsum|FeatureGuestTSO4)
	const bufSize, count = 1526, 600
	for range 250 {
		h.rx.add(nil, []uint32{bufSize})
	}
	h.kick(rxQueue)
	rng := rand.New(rand.NewPCG(1, 2))
	pkts := make([][]byte, count)
	for i := range pkts {
		size := 60 + rng.IntN(1500)
		if i%5 == 0 {
			size = 1000 + rng.IntN(64000)
		}
		pkts[i] = append(hdr(hdrFlagNeedsCsum, 0, 0, 34, 16), frame(size, byte(i))...)
	}
	go func() {
		for _, p := range pkts {
			if _, err := h.host.WritePacket([][]byte{p}); err != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	var pending []usedElem
	for i := 0; i < count; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d packets after 20s (stats rx %d dropped %d)", i, count, h.dev.Stats().RxPackets.Load(), h.dev.Stats().RxDropped.Load())
		}
		select {
		case <-h.irqs[rxQueue]:
		case <-time.After(time.Millisecond):
		}
		for {
			idx, _ := h.mem.Uint16(h.rx.used + 2)
			if idx == h.rx.lastUsed {
				break
			}
			pending = append(pending, h.rx.waitUsed(1)...)
		}
		// Reassemble whole packets from the reaped buffers.
		for len(pending) > 0 {
			first := h.rx.written(pending[0].head, pending[0].len)
			nb := int(binary.LittleEndian.Uint16(first[hdrNumBuffersOff:]))
			if nb == 0 || nb > len(pending) && nb > 64 {
				t.Fatalf("packet %d: num_buffers %d", i, nb)
			}
			if nb > len(pending) {
				t.Fatalf("packet %d: saw %d of its %d buffers: a packet's buffers were published piecemeal", i, len(pending), nb)
			}
			var got []byte
			for _, u := range pending[:nb] {
				got = append(got, h.rx.written(u.head, u.len)...)
			}
			binary.LittleEndian.PutUint16(got[hdrNumBuffersOff:], 0)
			if !bytes.Equal(got, pkts[i]) {
				t.Fatalf("packet %d: %d bytes, want %d", i, len(got), len(pkts[i]))
			}
			pending = pending[nb:]
			i++
		}
		// Refill in batches, as virtnet_receive does.
		if free := len(h.rx.free); free > 32 {
			for range free {
				h.rx.add(nil, []uint32{bufSize})
			}
			h.kick(rxQueue)
		}
	}
	h.wantNotBroken()
}
