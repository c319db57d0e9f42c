package pci

import (
	"errors"
	"testing"

	"kvmstack/virtio"
	"kvmstack/virtio/rng"
	pcibus "kvmstack/vmm/devices/pci"
)

// copyRAM copies the guest pages the harness uses (rings and buffers), as
// a snapshot's memory file carries them.
func copyRAM(t *testing.T, from, to *harness) {
	t.Helper()
	b := make([]byte, bufAddr+0x1000-ringDesc)
	if err := from.mem.ReadAt(b, ringDesc); err != nil {
		t.Fatal(err)
	}
	if err := to.mem.WriteAt(b, ringDesc); err != nil {
		t.Fatal(err)
	}
}

func TestTransportStateRoundTrip(t *testing.T) {
	src := newHarness(t, rng.New(), false)
	if !src.negotiate(virtio.FeatureVersion1 | virtio.FeatureEventIdx) {
		t.Fatal("FEATURES_OK refused")
	}
	msix := uint64(src.tr.Config().Capabilities()[pcibus.CapIDMSIX][0])
	src.cfgWrite(msix+3, []byte{0x80})
	for v := uint64(0); v < 2; v++ {
		src.write(msixTableOffset+16*v, 4, 0xFEE0_0000)
		src.write(msixTableOffset+16*v+8, 4, 0x30+v)
		src.write(msixTableOffset+16*v+12, 4, 0)
	}
	src.write(commonOffset+ccConfigMSIXVector, 2, 0)
	src.setupQueue(1)
	src.driverOK()
	src.postBuffer(1)
	src.kickViaIOEventFD()
	src.waitUsed(1)
	// The guest makes chain 2 available; the snapshot is taken before the
	// device saw the kick, which the snapshot does not carry.
	src.postBuffer(2)
	if _, err := src.tr.State(); err == nil {
		t.Fatal("State of a running device succeeded")
	}
	if err := src.tr.Pause(); err != nil {
		t.Fatal(err)
	}
	// used_event: interrupt once used.idx passes 1.
	if err := src.mem.PutUint16(ringAvl+4+2*16, 1); err != nil {
		t.Fatal(err)
	}
	st, err := src.tr.State()
	if err != nil {
		t.Fatal(err)
	}
	if q := st.Queues[0]; !st.Activated || q.LastAvail != 1 || q.UsedIdx != 1 || q.Size != 16 || q.Vector != 1 || !q.Enabled {
		t.Fatalf("saved state %+v", st)
	}
	bus := src.bus.State()

	dst := newHarness(t, rng.New(), false)
	copyRAM(t, src, dst)
	if err := dst.bus.SetState(bus); err != nil {
		t.Fatal(err)
	}
	if err := dst.tr.SetState(st); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name string
		off  uint64
		n    int
	}{
		{"status", ccDeviceStatus, 1}, {"config vector", ccConfigMSIXVector, 2}, {"queue size", ccQueueSize, 2},
		{"queue vector", ccQueueMSIXVector, 2}, {"queue enable", ccQueueEnable, 2}, {"queue desc", ccQueueDesc, 8},
		{"queue driver", ccQueueDriver, 8}, {"queue device", ccQueueDevice, 8},
	} {
		if a, b := src.read(commonOffset+f.off, f.n), dst.read(commonOffset+f.off, f.n); a != b {
			t.Errorf("%s reads %#x after restore, %#x before", f.name, b, a)
		}
	}
	if !dst.tr.Paused() {
		t.Fatal("restored device is not paused")
	}
	if err := dst.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	if n := dst.waitUsed(2); n != 32 {
		t.Fatalf("restored device wrote %d bytes into chain 2, want 32", n)
	}
	if got, _ := dst.mem.Uint16(ringUsed + 2); got != 2 {
		t.Fatalf("used.idx %d after restore, want 2 (chain 1 must not be used again)", got)
	}
	dst.waitEventfd(dst.vm.irqfds[pcibus.FirstMSIGSI+1])
	if !dst.tr.NotifyViaIOEventFD() {
		t.Fatal("notify ioeventfds not registered after restore")
	}
}

func TestTransportSetStateRefusesMismatch(t *testing.T) {
	h := newHarness(t, rng.New(), false)
	good, err := h.tr.State()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mut  func(*TransportState)
	}{
		{"other device type", func(s *TransportState) { s.DeviceType = uint32(virtio.DeviceBlock) }},
		{"extra queue", func(s *TransportState) { s.Queues = append(s.Queues, virtio.QueueState{}) }},
		{"queue above maximum", func(s *TransportState) { s.Queues[0].Size = 4096 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := good
			st.Queues = append([]virtio.QueueState(nil), good.Queues...)
			tc.mut(&st)
			if err := h.tr.SetState(st); !errors.Is(err, ErrStateMismatch) {
				t.Fatalf("SetState = %v, want ErrStateMismatch", err)
			}
		})
	}
	bad := good
	bad.MSIX.Table = bad.MSIX.Table[:16]
	if err := h.tr.SetState(bad); !errors.Is(err, pcibus.ErrStateMismatch) {
		t.Fatalf("SetState with a short MSI-X table = %v", err)
	}
}

func TestTransportSetStateAssertsPendingINTx(t *testing.T) {
	src := newHarness(t, rng.New(), false)
	st, err := src.tr.State()
	if err != nil {
		t.Fatal(err)
	}
	st.ISR = isrQueue // an interrupt the guest had not acknowledged
	dst := newHarness(t, rng.New(), false)
	if err := dst.tr.SetState(st); err != nil {
		t.Fatal(err)
	}
	dst.vm.mu.Lock()
	lines := append([]uint32(nil), dst.vm.lines...)
	dst.vm.mu.Unlock()
	if len(lines) != 1 || lines[0] != 17 {
		t.Fatalf("INTx lines raised at restore: %v, want [17]", lines)
	}
	if isr := dst.read(isrOffset, 1); isr != isrQueue {
		t.Fatalf("ISR %#x after restore, want the queue bit", isr)
	}
}
