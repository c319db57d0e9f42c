package net

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"kvmstack/netdev"
	"kvmstack/virtio"
)

// rxRepoll is how often a receive worker that waits for buffers looks at
// the ring without a kick.
const rxRepoll = 20 * time.Millisecond

// rxBuffer is one receive chain the worker popped and has not used yet.
type rxBuffer struct {
	head uint16
	bufs [][]byte // the chain's writable buffers, aliasing guest memory
	cap  int
}

// rxState is what the receive worker holds between packets: chains popped
// ahead so that one read from the TAP lands straight in guest memory.
type rxState struct {
	held   []rxBuffer
	cap    int      // summed capacity of held
	iov    [][]byte // gather list for the next read
	bounce []byte   // for a driver whose buffers are smaller than a packet
	used   []virtio.Used
}

// popRx takes the next receive chain off the queue; ok=false when the queue
// is empty.
func (r *run) popRx(q *virtio.Queue, s *rxState) (bool, error) {
	c, err := q.Pop()
	if err != nil || c == nil {
		return false, err
	}
	if c.ReadableLen() != 0 {
		return false, fmt.Errorf("%w: device-readable buffer in receive chain %d", errMalformed, c.Head)
	}
	w := c.WritableLen()
	if w < HdrLen {
		return false, fmt.Errorf("%w: %d-byte receive chain %d has no room for the header", errMalformed, w, c.Head)
	}
	bufs, err := c.Buffers(r.act.Memory, true)
	if err != nil {
		return false, fmt.Errorf("%w: %w", errMalformed, err)
	}
	if len(bufs) > netdev.MaxIOVecs {
		return false, fmt.Errorf("%w: receive chain %d has %d buffers, more than one read can fill", errMalformed, c.Head, len(bufs))
	}
	if w > maxFrame+HdrLen {
		w = maxFrame + HdrLen // more than any packet can use
	}
	s.held = append(s.held, rxBuffer{head: c.Head, bufs: bufs, cap: int(w)})
	s.cap += int(w)
	return true, nil
}

// rxLoop runs the receive queue until stop or a broken guest.
func (d *Device) rxLoop(r *run) {
	defer r.wg.Done()
	q := r.act.Queues[rxQueue]
	s := &rxState{}
	flush := func() { r.interrupt(q, rxQueue) }
	if err := q.DisableNotifications(); err != nil {
		r.broken(err)
		return
	}
	batch, failures := 0, 0
	for {
		// Hold enough guest buffers for the largest packet the TAP may
		// deliver: one chain without mergeable buffers, as many as it
		// takes with them.
		for (r.mrg && s.cap < r.rxNeed) || len(s.held) == 0 {
			ok, err := r.popRx(q, s)
			if err != nil {
				r.broken(err)
				return
			}
			if ok {
				continue
			}
			flush()
			more, err := q.EnableNotifications()
			if err != nil {
				r.broken(err)
				return
			}
			if !more {
				// The kick is the signal; the timer only bounds the
				// damage of a notification lost on the way (the
				// driver would otherwise wait on us forever).
				select {
				case <-r.act.Kicks[rxQueue]:
				case <-time.After(rxRepoll):
				case <-r.stop:
					return
				}
			}
			if err := q.DisableNotifications(); err != nil {
				r.broken(err)
				return
			}
		}
		if wait := d.rxLim.Delay(); wait > 0 {
			// Throttled: packets wait in the TAP's queue (and the
			// host kernel drops what overflows it, as a slow link would).
			flush()
			if !d.rxLim.Wait(wait, r.stop) {
				return
			}
			continue
		}
		n, err := d.receive(r, q, s, flush)
		if err != nil {
			switch {
			case r.stopping() || errors.Is(err, os.ErrDeadlineExceeded):
				return
			case errors.Is(err, errMalformed) || errors.Is(err, virtio.ErrNotInFlight):
				r.broken(err)
				return
			case errors.Is(err, os.ErrClosed):
				d.log.Error("virtio-net: receive worker stops", "err", err)
				return
			}
			// A packet the kernel could not hand over (EINVAL for a
			// header it cannot express, EFAULT): lost, like on a wire.
			// Back off if it persists, so a wedged TAP cannot spin.
			d.stats.RxDropped.Add(1)
			if failures++; failures > 8 {
				d.log.Warn("virtio-net: tap read keeps failing", "err", err)
				select {
				case <-time.After(10 * time.Millisecond):
				case <-r.stop:
					return
				}
			}
			continue
		}
		failures = 0
		if batch += n; batch >= 32 {
			flush()
			batch = 0
		}
	}
}

// receive reads one packet from the TAP into the held chains and hands the
// used ones to the guest. It returns the number of chains used (0 when the
// packet was dropped).
func (d *Device) receive(r *run, q *virtio.Queue, s *rxState, beforeWait func()) (int, error) {
	first := s.held[0]
	direct := r.mrg || first.cap >= r.rxNeed
	s.iov = s.iov[:0]
	limit := first.cap // what the gather list holds, in whole chains
	if direct {
		limit = 0
		for i, b := range s.held {
			if (!r.mrg && i > 0) || len(s.iov)+len(b.bufs) > netdev.MaxIOVecs {
				break
			}
			s.iov = append(s.iov, b.bufs...)
			limit += b.cap
		}
	} else {
		// A driver without mergeable buffers posted a chain smaller
		// than a packet may be: read aside, deliver what fits.
		if s.bounce == nil {
			s.bounce = make([]byte, r.rxNeed)
		}
		s.iov = append(s.iov, s.bounce)
	}
	n, err := d.backend.ReadPacket(s.iov, beforeWait)
	if err != nil {
		return 0, err
	}
	d.rxLim.Charge(uint64(max(n-HdrLen, 0)))
	if n < HdrLen+minFrame || n > limit {
		// Truncated by the gather list or a runt: the TAP gave what it
		// could, the packet is lost, the buffers stay ours.
		d.stats.RxDropped.Add(1)
		return 0, nil
	}
	if !direct {
		copyTo(first.bufs, s.bounce[:n])
	}
	used, left := 0, n
	for left > 0 {
		left -= min(left, s.held[used].cap)
		used++
	}
	// The TAP leaves num_buffers alone; the flags may say DATA_VALID,
	// which a driver without VIRTIO_NET_F_GUEST_CSUM must not see.
	var nb [2]byte
	binary.LittleEndian.PutUint16(nb[:], uint16(used))
	putAt(first.bufs, hdrNumBuffersOff, nb[:])
	if !r.guestCsum {
		putAt(first.bufs, hdrFlagsOff, []byte{0})
	}
	// All of a packet's chains become visible at once: the driver takes
	// num_buffers chains as soon as it sees the first.
	s.used = s.used[:0]
	left = n
	for i := 0; i < used; i++ {
		b := s.held[i]
		w := min(left, b.cap)
		left -= w
		s.used = append(s.used, virtio.Used{Head: b.head, Written: uint32(w)})
		s.cap -= b.cap
	}
	if err := q.PushBatch(s.used); err != nil {
		return 0, err
	}
	s.held = append(s.held[:0], s.held[used:]...)
	d.stats.RxPackets.Add(1)
	d.stats.RxBytes.Add(uint64(n - HdrLen))
	return used, nil
}

// putAt writes p at offset off of the concatenation of bufs.
func putAt(bufs [][]byte, off int, p []byte) {
	for _, b := range bufs {
		if len(p) == 0 {
			return
		}
		if off >= len(b) {
			off -= len(b)
			continue
		}
		c := copy(b[off:], p)
		p = p[c:]
		off = 0
	}
}

// copyTo scatters p over bufs.
func copyTo(bufs [][]byte, p []byte) {
	for _, b := range bufs {
		if len(p) == 0 {
			return
		}
		p = p[copy(b, p):]
	}
}
