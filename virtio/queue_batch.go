package virtio

import (
	"encoding/binary"
	"fmt"
)

// Used is one finished chain for PushBatch.
type Used struct {
	Head    uint16
	Written uint32
}

// PushBatch puts finished chains on the used ring in order and publishes
// them with one used-index update, so the driver sees all of them or none.
// virtio-net needs this for a packet spread over mergeable receive buffers:
// the driver takes the packet's num_buffers chains as soon as it sees the
// first and drops the packet if the rest are not there yet. On error
// (a head not in flight, or one given twice) nothing is pushed.
func (q *Queue) PushBatch(elems []Used) error {
	for i, e := range elems {
		if e.Head >= q.size || q.inflight[e.Head/64]&(1<<(e.Head%64)) == 0 {
			for _, u := range elems[:i] { // undo: they were in flight
				q.inflight[u.Head/64] |= 1 << (u.Head % 64)
			}
			return fmt.Errorf("%w: %d", ErrNotInFlight, e.Head)
		}
		q.inflight[e.Head/64] &^= 1 << (e.Head % 64)
	}
	for _, e := range elems {
		q.stats.completed(q.readLen[e.Head], e.Written)
		el := q.used[usedHeaderSize+usedElemSize*uint64(q.usedIdx&(q.size-1)):]
		binary.LittleEndian.PutUint32(el, uint32(e.Head))
		binary.LittleEndian.PutUint32(el[4:], e.Written)
		q.usedIdx++
	}
	// x86 keeps stores in order: every element is visible before the index.
	binary.LittleEndian.PutUint16(q.used[2:], q.usedIdx)
	return nil
}
