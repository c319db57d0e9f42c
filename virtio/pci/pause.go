package pci

import (
	"fmt"

	"kvmstack/virtio"
)

// Pause stops the device's workers for a machine pause and returns once
// none is in a request or touches a ring. The device's Reset already waits
// for that (the virtio.Device contract); chains a worker held ahead (net
// receive buffers) are handed back to the ring with Queue.Rewind, so
// nothing is in flight while paused and the queues' state is their ring
// indexes alone. The negotiated state stays: Resume activates the device
// again with the same queues, which go on where they stopped. Call it with
// the vCPUs parked, so the driver cannot change the device meanwhile.
// Pausing a paused transport does nothing.
func (t *Transport) Pause() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.paused {
		return nil
	}
	t.paused = true
	if !t.activated {
		return nil
	}
	t.dev.Reset()
	for i, q := range t.activation.Queues {
		if q == nil {
			continue
		}
		if _, err := q.Rewind(); err != nil {
			// Only a hostile driver rewrites available entries it
			// handed over; the device would have failed on them too.
			t.Broken(fmt.Errorf("queue %d at pause: %w", i, err))
		}
	}
	return nil
}

// Resume restarts the workers Pause stopped, with the same activation. A
// device the guest broke stays stopped until the driver resets it, as it
// would have without the pause.
func (t *Transport) Resume() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.paused {
		return nil
	}
	t.paused = false
	if !t.activated || t.needsReset.Load() {
		return nil
	}
	if err := t.dev.Activate(t.activation); err != nil {
		t.brokenLocked(fmt.Errorf("activate at resume: %w", err))
		return fmt.Errorf("virtio-pci %v: resume: %w", t.dev.Type(), err)
	}
	return nil
}

// Paused reports whether the device's workers are stopped by Pause.
func (t *Transport) Paused() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.paused
}

// Stats is what a virtio-pci function did since it was created.
type Stats struct {
	// Queues sums the counters of every queue of every activation:
	// Chains is the number of requests (or packets' buffers) completed,
	// DeviceRead and DeviceWritten their bytes, headers included.
	Queues virtio.QueueCounters
	// Notifications counts the driver's queue notifications received.
	Notifications uint64
	// Interrupts counts the interrupts raised (queue and configuration).
	Interrupts uint64
	// Errors counts the times the guest broke the device and interrupts
	// that failed.
	Errors uint64
}

// Stats returns the counters; safe from any goroutine while the device runs.
func (t *Transport) Stats() Stats {
	t.mu.Lock()
	q := t.retired.Add(queueCounters(t.activation.Queues))
	t.mu.Unlock()
	return Stats{Queues: q, Notifications: t.notifications.Load(), Interrupts: t.interrupts.Load(), Errors: t.errors.Load()}
}

func queueCounters(qs []*virtio.Queue) virtio.QueueCounters {
	var c virtio.QueueCounters
	for _, q := range qs {
		if q != nil {
			c = c.Add(q.Counters())
		}
	}
	return c
}
