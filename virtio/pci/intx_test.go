package pci

import (
	"sync"
	"testing"
	"time"

	"kvmstack/virtio"
	"kvmstack/virtio/rng"
	pcibus "kvmstack/vmm/devices/pci"
)

// waitINTx waits until INTA# has the given level.
func (h *harness) waitINTx(level bool) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if h.tr.intx.Load().Asserted() == level {
			return
		}
		time.Sleep(time.Millisecond)
	}
	h.t.Fatalf("INTA# never went to %v", level)
}

// TestINTxLevelTriggered: without MSI-X the used-buffer notification holds
// INTA# (GSI 17 for slot 1) asserted until the driver reads the ISR, as a
// level-triggered, _PRT-routed line must; INTx disable in the command
// register and MSI-X enable keep it low while the ISR still reports the
// interrupt.
func TestINTxLevelTriggered(t *testing.T) {
	h := newHarness(t, rng.New(), false)
	if g := h.tr.intx.Load().GSI(); g != 17 {
		t.Fatalf("slot 1 INTA# on GSI %d, want 17", g)
	}
	if !h.negotiate(virtio.FeatureVersion1) {
		t.Fatal("FEATURES_OK refused")
	}
	h.setupQueue(noVector)
	h.driverOK()

	h.postBuffer(1)
	h.kickViaIOEventFD()
	h.waitUsed(1)
	h.waitINTx(true)
	// Level, not a pulse: still asserted until acknowledged.
	time.Sleep(20 * time.Millisecond)
	if !h.tr.intx.Load().Asserted() {
		t.Fatal("INTA# dropped before the driver read the ISR")
	}
	if isr := h.read(isrOffset, 1); isr != isrQueue {
		t.Fatalf("ISR %#x, want the queue bit", isr)
	}
	if h.tr.intx.Load().Asserted() {
		t.Fatal("INTA# still asserted after the ISR read")
	}
	if isr := h.read(isrOffset, 1); isr != 0 {
		t.Fatalf("second ISR read %#x, want 0 (a shared line's other devices)", isr)
	}

	// INTx disable holds the pin low; the ISR still reports the interrupt,
	// and clearing the bit with it pending raises the pin again.
	setDisable := func(off bool) {
		hi := byte(0)
		if off {
			hi = pcibus.CommandINTxDisable >> 8
		}
		h.cfgWrite(pcibus.RegCommand, []byte{pcibus.CommandMemory | pcibus.CommandBusMaster, hi})
	}
	setDisable(true)
	h.postBuffer(2)
	h.kickViaIOEventFD()
	h.waitUsed(2)
	deadline := time.Now().Add(time.Second)
	for h.tr.isr.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if h.tr.intx.Load().Asserted() {
		t.Fatal("INTA# asserted with INTx disabled")
	}
	setDisable(false)
	if !h.tr.intx.Load().Asserted() {
		t.Fatal("INTA# low after INTx was re-enabled with an interrupt pending")
	}
	setDisable(true)
	if h.tr.intx.Load().Asserted() {
		t.Fatal("INTA# stayed asserted when INTx was disabled")
	}
	if isr := h.read(isrOffset, 1); isr != isrQueue {
		t.Fatalf("ISR %#x with INTx disabled, want the queue bit", isr)
	}

	// Enabling MSI-X takes the interrupt off INTA#.
	setDisable(false)
	if err := h.tr.Interrupt(0); err != nil {
		t.Fatal(err)
	}
	h.waitINTx(true)
	msix := h.tr.cfg.Capabilities()[pcibus.CapIDMSIX]
	if len(msix) != 1 {
		t.Fatalf("MSI-X capability at %v", msix)
	}
	h.cfgWrite(uint64(msix[0]+3), []byte{0x80}) // message control: MSI-X enable
	if !h.tr.msix.Enabled() || h.tr.intx.Load().Asserted() {
		t.Fatalf("MSI-X enabled %v, INTA# asserted %v; want MSI-X on and the pin low", h.tr.msix.Enabled(), h.tr.intx.Load().Asserted())
	}
	h.cfgWrite(uint64(msix[0]+3), []byte{0})
	h.read(isrOffset, 1)

	// Reset drops a pending interrupt with the line.
	h.cfgWrite(pcibus.RegCommand, []byte{pcibus.CommandMemory | pcibus.CommandBusMaster, 0})
	if err := h.tr.Interrupt(0); err != nil {
		t.Fatal(err)
	}
	h.waitINTx(true)
	h.write(commonOffset+ccDeviceStatus, 1, 0)
	if h.tr.intx.Load().Asserted() || h.read(isrOffset, 1) != 0 {
		t.Fatal("reset left INTA# asserted or the ISR set")
	}
}

// TestINTxFollowsISRUnderRace: interrupts raised by a worker while the
// driver reads the ISR never leave the line asserted with nothing to
// acknowledge (an interrupt storm the guest would disable as "nobody
// cared") nor low with an ISR bit pending (a lost interrupt).
func TestINTxFollowsISRUnderRace(t *testing.T) {
	h := newHarness(t, rng.New(), false)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range 20000 {
			if err := h.tr.Interrupt(0); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 20000 {
			h.read(isrOffset, 1)
		}
	}()
	wg.Wait()
	if asserted, pending := h.tr.intx.Load().Asserted(), h.tr.isr.Load() != 0; asserted != pending {
		t.Fatalf("INTA# asserted=%v with ISR pending=%v", asserted, pending)
	}
	h.read(isrOffset, 1)
	if h.tr.intx.Load().Asserted() {
		t.Fatal("INTA# asserted after the final ISR read")
	}
}
