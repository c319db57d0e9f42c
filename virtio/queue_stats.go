package virtio

import "sync/atomic"

// QueueCounters is what one queue moved: chains the device completed and
// the bytes of those chains it read (driver to device) and wrote (device to
// driver), headers included. A chain counts when it is pushed, so one given
// back by Rewind and served again counts once.
type QueueCounters struct {
	Chains        uint64
	DeviceRead    uint64
	DeviceWritten uint64
}

// Add sums two counter sets.
func (c QueueCounters) Add(o QueueCounters) QueueCounters {
	return QueueCounters{Chains: c.Chains + o.Chains, DeviceRead: c.DeviceRead + o.DeviceRead, DeviceWritten: c.DeviceWritten + o.DeviceWritten}
}

// queueStats are atomics: the worker owning the queue writes them, metrics
// readers on other goroutines load them.
type queueStats struct {
	chains, read, written atomic.Uint64
}

func (s *queueStats) completed(read, written uint32) {
	s.chains.Add(1)
	s.read.Add(uint64(read))
	s.written.Add(uint64(written))
}

// Counters returns the queue's counters. Safe to call from any goroutine
// while the device works.
func (q *Queue) Counters() QueueCounters {
	return QueueCounters{Chains: q.stats.chains.Load(), DeviceRead: q.stats.read.Load(), DeviceWritten: q.stats.written.Load()}
}
