package rng

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"kvmstack/virtio"
)

// QueueSize is the request queue's maximum size.
const QueueSize = 64

// maxRequest bounds the bytes served per request, so one huge buffer cannot
// keep the worker (and the host's entropy pool) busy; the driver asks again.
const maxRequest = 64 << 10

// Device is a virtio-rng device. It implements virtio.Device and io.Closer.
type Device struct {
	mu   sync.Mutex
	stop chan struct{}
	done chan struct{}
	// getrandom fills b; a variable so tests can make it fail.
	getrandom func(b []byte) (int, error)
}

// New returns an entropy device backed by getrandom(2).
func New() *Device {
	return &Device{getrandom: func(b []byte) (int, error) { return unix.Getrandom(b, 0) }}
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.DeviceRNG }

// Features implements virtio.Device: the entropy device has none.
func (d *Device) Features() uint64 { return 0 }

// QueueSizes implements virtio.Device: one request queue.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device: there is no configuration space.
func (d *Device) ReadConfig(_ uint64, data []byte) { clear(data) }

// WriteConfig implements virtio.Device.
func (d *Device) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	if len(a.Queues) != 1 || len(a.Kicks) != 1 {
		return fmt.Errorf("virtio-rng: %d queues, want 1", len(a.Queues))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stop != nil {
		return fmt.Errorf("virtio-rng: already active")
	}
	if a.Queues[0] == nil {
		// The driver did not enable the queue: nothing to serve.
		return nil
	}
	d.stop, d.done = make(chan struct{}), make(chan struct{})
	go d.run(a, d.stop, d.done)
	return nil
}

// Reset implements virtio.Device.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stop != nil {
		close(d.stop)
		<-d.done
		d.stop, d.done = nil, nil
	}
}

// Close stops the device.
func (d *Device) Close() error {
	d.Reset()
	return nil
}

func (d *Device) run(a virtio.Activation, stop, done chan struct{}) {
	defer close(done)
	q := a.Queues[0]
	for {
		if err := d.serve(a, q); err != nil {
			a.Broken(err)
			return
		}
		select {
		case <-stop:
			return
		case <-a.Kicks[0]:
		}
	}
}

// serve fills every available request, then re-arms notifications.
func (d *Device) serve(a virtio.Activation, q *virtio.Queue) error {
	for {
		if err := q.DisableNotifications(); err != nil {
			return err
		}
		for {
			c, err := q.Pop()
			if err != nil {
				return err
			}
			if c == nil {
				break
			}
			n, err := d.fill(a, c)
			if err != nil {
				return err
			}
			if err := q.Push(c.Head, n); err != nil {
				return err
			}
		}
		if q.NeedInterrupt() {
			if err := a.Interrupt(0); err != nil {
				return err
			}
		}
		more, err := q.EnableNotifications()
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}

// fill writes random bytes into the chain's writable buffers.
func (d *Device) fill(a virtio.Activation, c *virtio.Chain) (uint32, error) {
	bufs, err := c.Buffers(a.Memory, true)
	if err != nil {
		return 0, err
	}
	var n uint32
	for _, b := range bufs {
		if room := maxRequest - int(n); len(b) > room {
			b = b[:room]
		}
		for len(b) > 0 {
			k, err := d.getrandom(b)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				// Host failure: hand the guest what it has (possibly
				// nothing); its driver simply asks again.
				return n, nil
			}
			b = b[k:]
			n += uint32(k)
		}
		if n >= maxRequest {
			break
		}
	}
	return n, nil
}
