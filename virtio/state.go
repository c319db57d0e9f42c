package virtio

import (
	"fmt"

	"kvmstack/vmm/memory"
)

// QueueState is one virtqueue as a snapshot records it: what the driver
// programmed through the transport and where the device stood in the rings.
type QueueState struct {
	// Size is the queue size the driver chose (the device maximum until
	// it writes another).
	Size uint16 `json:"size"`
	// Enabled is queue_enable.
	Enabled bool `json:"enabled,omitempty"`
	// Desc, Driver and Device are the guest addresses of the descriptor
	// table, available ring and used ring.
	Desc   uint64 `json:"desc,omitempty"`
	Driver uint64 `json:"driver,omitempty"`
	Device uint64 `json:"device,omitempty"`
	// Vector is the queue's MSI-X vector (0xffff: none).
	Vector uint16 `json:"vector"`
	// LastAvail is the next available-ring entry the device will consume;
	// UsedIdx the next used-ring entry it will fill.
	LastAvail uint16 `json:"last_avail"`
	UsedIdx   uint16 `json:"used_idx"`
}

// Position is where the device stands in the rings: the next available
// entry it will consume and the next used entry it will fill. They differ
// by the chains in flight (none after Rewind).
func (q *Queue) Position() (lastAvail, usedIdx uint16) { return q.lastAvail, q.usedIdx }

// RestoreQueue is NewQueue for a queue that was running when a snapshot was
// taken: the device resumes at lastAvail in the available ring and usedIdx
// in the used ring. The two must be equal: a snapshot is taken with every
// popped chain pushed, or (receive buffers held empty) with last_avail set
// back to used.idx so that the restored device pops them again.
func RestoreQueue(mem *memory.Memory, st QueueState, eventIdx bool) (*Queue, error) {
	q, err := NewQueue(mem, st.Size, memory.GuestAddr(st.Desc), memory.GuestAddr(st.Driver), memory.GuestAddr(st.Device), eventIdx)
	if err != nil {
		return nil, err
	}
	if st.LastAvail != st.UsedIdx {
		// A chain in flight would have no owner: the device that popped
		// it is gone, so it could never be pushed.
		return nil, fmt.Errorf("%w: restored queue has %d chains in flight (last_avail %d, used %d)",
			ErrMalformed, st.LastAvail-st.UsedIdx, st.LastAvail, st.UsedIdx)
	}
	q.lastAvail, q.usedIdx, q.signalled = st.LastAvail, st.UsedIdx, st.UsedIdx
	return q, nil
}
