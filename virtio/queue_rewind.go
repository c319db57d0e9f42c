package virtio

import (
	"errors"
	"fmt"
	"math/bits"
)

// ErrRewind is returned by Rewind when the chains in flight are not the
// last ones popped, so they cannot be handed back through the ring.
var ErrRewind = errors.New("virtio: chains in flight are not the last ones popped")

// InFlight is the number of chains popped and not yet pushed.
func (q *Queue) InFlight() int {
	n := 0
	for _, w := range q.inflight {
		n += bits.OnesCount64(w)
	}
	return n
}

// Rewind gives back every chain in flight: the next Pops return them again,
// in the order they were first popped, read afresh from the descriptor
// table (the driver cannot have changed a chain it has not got back). It
// returns how many chains it gave back.
//
// A pause uses it: the device's workers stop between requests, but a
// device may hold chains it popped ahead (virtio-net keeps receive buffers
// for the next packet); rewinding leaves nothing in flight while paused, so
// the queue state is exactly its ring indexes, and after resume the same
// buffers are used. It requires the chains in flight to be the last ones
// popped, which holds for every device that completes in order (all of
// this project's); otherwise it returns ErrRewind and changes nothing. Call
// it only while no worker uses the queue.
func (q *Queue) Rewind() (int, error) {
	n := q.InFlight()
	if n == 0 {
		return 0, nil
	}
	if n > int(q.size) {
		return 0, fmt.Errorf("%w: %d in flight in a queue of %d", ErrRewind, n, q.size)
	}
	left := append([]uint64(nil), q.inflight...)
	for i := 1; i <= n; i++ {
		slot := uint64((q.lastAvail - uint16(i)) & (q.size - 1))
		head := uint16(q.avail[availHeaderSize+2*slot]) | uint16(q.avail[availHeaderSize+2*slot+1])<<8
		if head >= q.size || left[head/64]&(1<<(head%64)) == 0 {
			return 0, fmt.Errorf("%w: available entry %d names %d, not a chain in flight", ErrRewind, q.lastAvail-uint16(i), head)
		}
		left[head/64] &^= 1 << (head % 64)
	}
	q.lastAvail -= uint16(n)
	clear(q.inflight)
	return n, nil
}
