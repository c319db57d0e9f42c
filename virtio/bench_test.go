package virtio

import (
	"testing"
)

// BenchmarkQueuePopPush measures the device side of one request: pop a
// two-descriptor chain (header + 4 KiB writable buffer), push it, check
// whether to interrupt. The driver's side is refilled outside the timer's
// interest (it is a few stores per request).
func BenchmarkQueuePopPush(b *testing.B) {
	d := newTestDriver(b, 256)
	q := d.queue(true)
	hdr := d.alloc(16)
	data := d.alloc(4096)
	for i := uint16(0); i < 256; i += 2 {
		d.putDesc(d.desc, i, hdr, 16, descFlagNext, i+1)
		d.putDesc(d.desc, i+1, data, 4096, descFlagWrite, 0)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		head := uint16(i%128) * 2
		d.publish(head)
		c, err := q.Pop()
		if err != nil || c == nil {
			b.Fatal(err)
		}
		if err := q.Push(c.Head, 4096); err != nil {
			b.Fatal(err)
		}
		q.NeedInterrupt()
	}
}
