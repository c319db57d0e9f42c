package pci

import (
	"sync"
	"testing"
	"time"

	"kvmstack/virtio"
	"kvmstack/virtio/rng"
)

// TestPauseRng: while paused, a posted and notified buffer is not served;
// after Resume it is, and the counters add up across the pause.
func TestPauseRng(t *testing.T) {
	h := newHarness(t, rng.New(), true)
	if !h.negotiate(virtio.FeatureVersion1) {
		t.Fatal("FEATURES_OK refused")
	}
	h.setupQueue(noVector)
	h.driverOK()
	h.postBuffer(1)
	h.write(notifyOffset, 2, 0)
	h.waitUsed(1)
	for range 2 { // pausing twice is one pause
		if err := h.tr.Pause(); err != nil {
			t.Fatal(err)
		}
	}
	if !h.tr.Paused() {
		t.Fatal("not paused")
	}
	h.postBuffer(2)
	h.write(notifyOffset, 2, 0)
	time.Sleep(100 * time.Millisecond)
	if idx, _ := h.mem.Uint16(ringUsed + 2); idx != 1 {
		t.Fatalf("paused device served a request: used.idx %d", idx)
	}
	for range 2 {
		if err := h.tr.Resume(); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.waitUsed(2); n != 32 {
		t.Fatalf("after resume the device wrote %d bytes", n)
	}
	st := h.tr.Stats()
	if st.Queues.Chains != 2 || st.Queues.DeviceWritten != 64 || st.Queues.DeviceRead != 0 {
		t.Errorf("queue counters %+v, want 2 chains, 64 bytes written", st.Queues)
	}
	if st.Notifications != 2 || st.Interrupts < 2 || st.Errors != 0 {
		t.Errorf("stats %+v, want 2 notifications, at least 2 interrupts, no errors", st)
	}
}

// holder is a device whose worker pops every available chain and keeps
// them (as virtio-net keeps receive buffers) until its next kick, when it
// completes all but the newest.
type holder struct {
	mu     sync.Mutex
	popped []uint16
	stop   chan struct{}
	done   chan struct{}
}

func (d *holder) Type() virtio.DeviceType          { return virtio.DeviceRNG }
func (d *holder) Features() uint64                 { return 0 }
func (d *holder) QueueSizes() []uint16             { return []uint16{16} }
func (d *holder) ReadConfig(_ uint64, data []byte) { clear(data) }
func (d *holder) WriteConfig(uint64, []byte)       {}

func (d *holder) Activate(a virtio.Activation) error {
	d.stop, d.done = make(chan struct{}), make(chan struct{})
	go func(stop, done chan struct{}) {
		defer close(done)
		q := a.Queues[0]
		for {
			for {
				c, err := q.Pop()
				if err != nil || c == nil {
					break
				}
				d.mu.Lock()
				d.popped = append(d.popped, c.Head)
				d.mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-a.Kicks[0]:
			}
		}
	}(d.stop, d.done)
	return nil
}

func (d *holder) Reset() {
	if d.stop != nil {
		close(d.stop)
		<-d.done
		d.stop = nil
	}
}

func (d *holder) heads() []uint16 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]uint16(nil), d.popped...)
}

func TestPauseRewindsHeldChains(t *testing.T) {
	dev := &holder{}
	h := newHarness(t, dev, true)
	if !h.negotiate(virtio.FeatureVersion1) {
		t.Fatal("FEATURES_OK refused")
	}
	h.setupQueue(noVector)
	h.driverOK()
	h.postBuffer(1)
	h.write(notifyOffset, 2, 0)
	deadline := time.Now().Add(5 * time.Second)
	for len(dev.heads()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	q := h.tr.activation.Queues[0]
	if err := h.tr.Pause(); err != nil {
		t.Fatal(err)
	}
	if n := q.InFlight(); n != 0 {
		t.Fatalf("%d chains in flight while paused", n)
	}
	if err := h.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	for len(dev.heads()) < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := dev.heads(); len(got) != 2 || got[0] != 0 || got[1] != 0 {
		t.Fatalf("popped heads %v, want chain 0 before the pause and again after it", got)
	}
	if q.InFlight() != 1 {
		t.Fatalf("%d in flight after resume, want the held chain", q.InFlight())
	}
}

// TestPauseInactive: pausing a device the driver never started, or one the
// guest broke, starts nothing at resume.
func TestPauseInactive(t *testing.T) {
	dev := &holder{}
	h := newHarness(t, dev, true)
	if err := h.tr.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := h.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	if dev.stop != nil {
		t.Fatal("resume activated a device the driver never started")
	}
	if !h.negotiate(virtio.FeatureVersion1) {
		t.Fatal("FEATURES_OK refused")
	}
	h.setupQueue(noVector)
	h.driverOK()
	if err := h.tr.Pause(); err != nil {
		t.Fatal(err)
	}
	h.tr.Broken(errTest)
	if err := h.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	if dev.stop != nil {
		t.Fatal("resume restarted a broken device")
	}
	if st := h.tr.Stats(); st.Errors != 1 {
		t.Fatalf("errors %d, want 1", st.Errors)
	}
}

type testError string

func (e testError) Error() string { return string(e) }

const errTest = testError("test: guest misuse")
