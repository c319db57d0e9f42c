package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"

	"kvmstack/netdev"
	"kvmstack/virtio"
)

// frame makes an Ethernet frame of n bytes with recognisable contents.
func frame(n int, seed byte) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = seed + byte(i*7)
	}
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	return f
}

// hdr builds a virtio-net header.
func hdr(flags, gso uint8, gsoSize, csumStart, csumOff uint16) []byte {
	h := make([]byte, HdrLen)
	h[hdrFlagsOff], h[hdrGSOTypeOff] = flags, gso
	binary.LittleEndian.PutUint16(h[hdrGSOSizeOff:], gsoSize)
	binary.LittleEndian.PutUint16(h[hdrCsumStartOff:], csumStart)
	binary.LittleEndian.PutUint16(h[hdrCsumOffOff:], csumOff)
	return h
}

const txFeatures = FeatureCsum | FeatureHostTSO4 | FeatureHostTSO6

func TestTransmit(t *testing.T) {
	f := frame(1000, 1)
	tso := frame(60000, 2)
	tests := []struct {
		name  string
		parts [][]byte
		want  []byte // what reaches the tap, header included
	}{
		{"header apart", [][]byte{hdr(0, 0, 0, 0, 0), f}, append(hdr(0, 0, 0, 0, 0), f...)},
		{"header with frame", [][]byte{append(hdr(0, 0, 0, 0, 0), f...)}, append(hdr(0, 0, 0, 0, 0), f...)},
		{"header split", [][]byte{hdr(1, 0, 0, 34, 16)[:5], append(hdr(1, 0, 0, 34, 16)[5:], f[:100]...), f[100:600], {}, f[600:]},
			append(hdr(1, 0, 0, 34, 16), f...)},
		{"tso4", [][]byte{hdr(1, gsoTCPv4, 1448, 34, 16), tso[:30000], tso[30000:]}, append(hdr(1, gsoTCPv4, 1448, 34, 16), tso...)},
		{"tso6", [][]byte{append(hdr(1, gsoTCPv6, 1428, 54, 16), tso...)}, append(hdr(1, gsoTCPv6, 1428, 54, 16), tso...)},
	}
	h := newHarness(t, txFeatures)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head := h.tx.add(tt.parts, nil)
			h.kick(txQueue)
			got := h.hostRead()
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("tap got %d bytes, want %d (first % x)", len(got), len(tt.want), got[:min(len(got), 16)])
			}
			u := h.tx.waitUsed(1)
			if u[0].head != head || u[0].len != 0 {
				t.Fatalf("used %+v, want head %d len 0", u[0], head)
			}
			select {
			case <-h.irqs[txQueue]:
			case <-time.After(5 * time.Second):
				t.Fatal("no transmit interrupt")
			}
		})
	}
	h.wantNotBroken()
	if got := h.dev.Stats().TxPackets.Load(); got != uint64(len(tests)) {
		t.Errorf("TxPackets = %d, want %d", got, len(tests))
	}
}

// TestTransmitDrops sends packets the device must drop without breaking:
// each is used, none reaches the tap, and a good packet after them does.
func TestTransmitDrops(t *testing.T) {
	f := frame(200, 3)
	tests := []struct {
		name     string
		features uint64
		parts    [][]byte
	}{
		{"runt", txFeatures, [][]byte{hdr(0, 0, 0, 0, 0), f[:13]}},
		{"csum not negotiated", 0, [][]byte{hdr(1, 0, 0, 34, 16), f}},
		{"csum beyond frame", txFeatures, [][]byte{hdr(1, 0, 0, 190, 16), f}},
		{"data valid from driver", txFeatures, [][]byte{hdr(2, 0, 0, 0, 0), f}},
		{"tso4 not negotiated", FeatureCsum, [][]byte{hdr(1, gsoTCPv4, 1448, 34, 16), f}},
		{"ecn not negotiated", txFeatures, [][]byte{hdr(1, gsoTCPv4|gsoECN, 1448, 34, 16), f}},
		{"udp gso", txFeatures, [][]byte{hdr(1, gsoUDP, 1448, 34, 6), f}},
		{"gso without csum", txFeatures, [][]byte{hdr(0, gsoTCPv4, 1448, 0, 0), f}},
		{"gso size 0", txFeatures, [][]byte{hdr(1, gsoTCPv6, 0, 54, 16), f}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.features)
			h.tx.add(tt.parts, nil)
			good := append(hdr(0, 0, 0, 0, 0), f...)
			h.tx.add([][]byte{good}, nil)
			h.kick(txQueue)
			if got := h.hostRead(); !bytes.Equal(got, good) {
				t.Fatalf("first packet on the tap is %d bytes, want the good one", len(got))
			}
			h.tx.waitUsed(2)
			h.wantNotBroken()
			if d := h.dev.Stats().TxDropped.Load(); d != 1 {
				t.Errorf("TxDropped = %d, want 1", d)
			}
		})
	}
}

// TestMalformedChainsBreak checks that chains against the queue's rules mark
// the device broken, and that Reset and a new activation recover it.
func TestMalformedChainsBreak(t *testing.T) {
	tests := []struct {
		name  string
		queue int
		add   func(h *harness)
	}{
		{"tx writable buffer", txQueue, func(h *harness) { h.tx.add([][]byte{hdr(0, 0, 0, 0, 0), frame(60, 0)}, []uint32{10}) }},
		{"tx short header", txQueue, func(h *harness) { h.tx.add([][]byte{make([]byte, 11)}, nil) }},
		{"tx oversize", txQueue, func(h *harness) { h.tx.add([][]byte{hdr(0, 0, 0, 0, 0), make([]byte, maxFrame+1)}, nil) }},
		{"rx readable buffer", rxQueue, func(h *harness) { h.rx.add([][]byte{make([]byte, 10)}, []uint32{2048}) }},
		{"rx no room for header", rxQueue, func(h *harness) { h.rx.add(nil, []uint32{4, 4}) }},
		{"rx ring index", rxQueue, func(h *harness) {
			if err := h.mem.PutUint16(h.rx.avail+2, 1000); err != nil {
				h.t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, FeatureMrgRxBuf|txFeatures)
			tt.add(h)
			h.kick(tt.queue)
			if err := h.wantBroken(); err == nil {
				t.Fatal("nil error")
			}
			h.dev.Reset()
			// A fresh driver on fresh rings works again.
			h.rx = newRing(t, h.mem, 0x100000, 256)
			h.tx = newRing(t, h.mem, 0x400000, 256)
			if err := h.dev.Activate(h.activation(FeatureMrgRxBuf | txFeatures)); err != nil {
				t.Fatal(err)
			}
			pkt := append(hdr(0, 0, 0, 0, 0), frame(100, 9)...)
			h.tx.add([][]byte{pkt}, nil)
			h.kick(txQueue)
			if got := h.hostRead(); !bytes.Equal(got, pkt) {
				t.Fatalf("after reset the tap got %d bytes", len(got))
			}
		})
	}
}

// TestReceiveMergeable delivers packets of several sizes into 1526-byte
// mergeable buffers, as Linux posts them, and checks num_buffers, the used
// lengths and the bytes.
func TestReceiveMergeable(t *testing.T) {
	h := newHarness(t, FeatureMrgRxBuf|FeatureGuestCsum|FeatureGuestTSO4)
	const bufSize = 1526
	post := func(n int) {
		for range n {
			h.rx.add(nil, []uint32{bufSize})
		}
		h.kick(rxQueue)
	}
	post(200)
	for i, size := range []int{60, 1514, bufSize - HdrLen + 1, 9000, 65000, 42} {
		pkt := append(hdr(hdrFlagNeedsCsum, 0, 0, 34, 16), frame(size, byte(i))...)
		if size == 65000 {
			pkt = append(hdr(hdrFlagNeedsCsum, gsoTCPv4, 1448, 34, 16), frame(size, byte(i))...)
		}
		h.hostWrite(pkt)
		want := (len(pkt) + bufSize - 1) / bufSize
		used := h.rx.waitUsed(want)
		var got []byte
		for j, u := range used {
			if j < want-1 && u.len != bufSize {
				t.Errorf("packet %d: buffer %d has %d bytes, want a full one", i, j, u.len)
			}
			got = append(got, h.rx.written(u.head, u.len)...)
		}
		if nb := binary.LittleEndian.Uint16(got[hdrNumBuffersOff:]); int(nb) != want {
			t.Errorf("packet %d: num_buffers %d, want %d", i, nb, want)
		}
		binary.LittleEndian.PutUint16(got[hdrNumBuffersOff:], 0)
		if !bytes.Equal(got, pkt) {
			t.Fatalf("packet %d (%d bytes): guest got %d bytes, not the same", i, len(pkt), len(got))
		}
		post(want)
	}
	select {
	case <-h.irqs[rxQueue]:
	case <-time.After(5 * time.Second):
		t.Fatal("no receive interrupt")
	}
	h.wantNotBroken()
}

// TestReceiveWaitsForBuffers: a packet that arrives before the driver posts
// enough buffers is delivered once it does, never cut.
func TestReceiveWaitsForBuffers(t *testing.T) {
	h := newHarness(t, FeatureMrgRxBuf)
	pkt := append(hdr(0, 0, 0, 0, 0), frame(1500, 5)...)
	h.hostWrite(pkt)
	h.rx.add(nil, []uint32{1000}) // short of an MTU-sized packet
	h.kick(rxQueue)
	time.Sleep(50 * time.Millisecond)
	if idx, _ := h.mem.Uint16(h.rx.used + 2); idx != 0 {
		t.Fatalf("device used a buffer before it could hold any packet")
	}
	h.rx.add(nil, []uint32{1000})
	h.kick(rxQueue)
	used := h.rx.waitUsed(2)
	got := append(h.rx.written(used[0].head, used[0].len), h.rx.written(used[1].head, used[1].len)...)
	binary.LittleEndian.PutUint16(got[hdrNumBuffersOff:], 0)
	if !bytes.Equal(got, pkt) {
		t.Fatal("packet differs")
	}
}

// TestReceiveSingleBuffer covers a driver without mergeable buffers: a big
// chain is filled directly, a small chain takes small packets and a packet
// too big for it is dropped; the DATA_VALID flag is hidden from a driver
// without GUEST_CSUM and num_buffers is 1.
func TestReceiveSingleBuffer(t *testing.T) {
	h := newHarness(t, 0)
	h.rx.add(nil, []uint32{HdrLen, 1518}) // header apart, as legacy drivers do
	h.kick(rxQueue)
	pkt := append(hdr(hdrFlagDataValid, 0, 0, 0, 0), frame(1514, 1)...)
	h.hostWrite(pkt)
	u := h.rx.waitUsed(1)[0]
	got := h.rx.written(u.head, u.len)
	if got[hdrFlagsOff] != 0 || binary.LittleEndian.Uint16(got[hdrNumBuffersOff:]) != 1 {
		t.Errorf("header % x: want flags 0, num_buffers 1", got[:HdrLen])
	}
	if !bytes.Equal(got[HdrLen:], pkt[HdrLen:]) {
		t.Error("frame differs")
	}
	// A chain smaller than the MTU: a 1000-byte packet fits, 1514 does not.
	h.rx.add(nil, []uint32{1100})
	h.kick(rxQueue)
	h.hostWrite(append(hdr(0, 0, 0, 0, 0), frame(1514, 2)...))
	small := append(hdr(0, 0, 0, 0, 0), frame(1000, 3)...)
	h.hostWrite(small)
	u = h.rx.waitUsed(1)[0]
	got = h.rx.written(u.head, u.len)
	binary.LittleEndian.PutUint16(got[hdrNumBuffersOff:], 0)
	if !bytes.Equal(got, small) {
		t.Errorf("small packet: got %d bytes, want %d", len(got), len(small))
	}
	if d := h.dev.Stats().RxDropped.Load(); d != 1 {
		t.Errorf("RxDropped = %d, want 1", d)
	}
	h.wantNotBroken()
}

// TestOffloadNegotiation checks features offered for what the tap supports
// and the tap offloads set for what the driver took.
func TestOffloadNegotiation(t *testing.T) {
	tests := []struct {
		name      string
		supported netdev.Offload
		offered   uint64 // must be offered
		absent    uint64 // must not be
		accept    uint64
		want      netdev.Offload
	}{
		{"all", allOffloads, FeatureGuestCsum | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN, 0,
			FeatureGuestCsum | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN, allOffloads},
		{"csum only tap", netdev.OffloadCsum, FeatureGuestCsum, FeatureGuestTSO4 | FeatureGuestTSO6, FeatureGuestCsum, netdev.OffloadCsum},
		{"no offload tap", 0, FeatureCsum | FeatureHostTSO4, FeatureGuestCsum, 0, 0},
		{"driver takes tso4 only", allOffloads, 0, 0, FeatureGuestCsum | FeatureGuestTSO4, netdev.OffloadCsum | netdev.OffloadTSO4},
		{"tso without csum is ignored", allOffloads, 0, 0, FeatureGuestTSO4, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b, err := netdev.SocketPair()
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			tap := &fakeTap{PacketFile: a, supported: tt.supported, mtu: 1500}
			d, err := NewWithBackend("fake", tap, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			f := d.Features()
			base := FeatureMAC | FeatureStatus | FeatureMrgRxBuf | FeatureCsum | FeatureHostTSO4 | FeatureHostTSO6
			if f&(base|tt.offered) != base|tt.offered || f&tt.absent != 0 {
				t.Fatalf("features %#x", f)
			}
			if got := offloadsFor(tt.accept); got != tt.want {
				t.Errorf("offloadsFor(%#x) = %#x, want %#x", tt.accept, got, tt.want)
			}
		})
	}
}

func TestConfigSpace(t *testing.T) {
	a, b, err := netdev.SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	mac := []byte{0x52, 0x54, 0, 1, 2, 3}
	d, err := NewWithBackend("fake", &fakeTap{PacketFile: a, mtu: 1500}, mac)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tests := []struct {
		off  uint64
		n    int
		want []byte
	}{
		{0, 6, mac},
		{6, 2, []byte{1, 0}},
		{4, 4, []byte{2, 3, 1, 0}},
		{7, 4, []byte{0, 0, 0, 0}},
		{1 << 63, 8, make([]byte, 8)},
		{^uint64(0), 4, make([]byte, 4)},
	}
	for _, tt := range tests {
		got := make([]byte, tt.n)
		for i := range got {
			got[i] = 0xee
		}
		d.ReadConfig(tt.off, got)
		if !bytes.Equal(got, tt.want) {
			t.Errorf("ReadConfig(%d, %d) = % x, want % x", tt.off, tt.n, got, tt.want)
		}
	}
	d.WriteConfig(0, []byte{9, 9, 9, 9, 9, 9})
	got := make([]byte, 6)
	d.ReadConfig(0, got)
	if !bytes.Equal(got, mac) {
		t.Error("config write changed the MAC")
	}
	if d.Type() != virtio.DeviceNet || len(d.QueueSizes()) != 2 {
		t.Error("wrong type or queue count")
	}
	if _, err := NewWithBackend("x", &fakeTap{PacketFile: a}, []byte{1, 2, 3, 4, 5, 6}); err == nil {
		t.Error("multicast MAC accepted")
	}
	r, err := NewWithBackend("x", &fakeTap{PacketFile: a}, nil)
	if err != nil || r.MAC()[0] != 0x52 || r.MAC()[0]&1 != 0 {
		t.Errorf("random MAC %v, %v", r.MAC(), err)
	}
}

// TestActivateSetsOffloadAndReset checks the tap's offloads follow
// activation and reset, and that Reset ends a receive worker blocked on the
// tap without leaking goroutines.
func TestActivateSetsOffloadAndReset(t *testing.T) {
	before := runtime.NumGoroutine()
	h := newHarness(t, FeatureMrgRxBuf|FeatureGuestCsum|FeatureGuestTSO4|FeatureGuestTSO6)
	for range 64 {
		h.rx.add(nil, []uint32{1526})
	}
	h.kick(rxQueue)
	time.Sleep(20 * time.Millisecond) // the worker now waits on the tap
	if err := h.dev.Activate(h.activation(0)); !errors.Is(err, ErrActive) {
		t.Errorf("second Activate: %v", err)
	}
	done := make(chan struct{})
	go func() { h.dev.Reset(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Reset hangs")
	}
	h.tap.mu.Lock()
	got := h.tap.offloads
	h.tap.mu.Unlock()
	want := []netdev.Offload{netdev.OffloadCsum | netdev.OffloadTSO4 | netdev.OffloadTSO6, 0}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("SetOffload calls %#x, want %#x", got, want)
	}
	time.Sleep(20 * time.Millisecond)
	if n := runtime.NumGoroutine(); n > before+1 {
		t.Errorf("%d goroutines after Reset, %d before", n, before)
	}
	if err := h.dev.Activate(h.activation(txFeatures)); err != nil {
		t.Fatalf("activate after reset: %v", err)
	}
	h.dev.Reset()
	h.dev.Reset() // twice is fine
}
