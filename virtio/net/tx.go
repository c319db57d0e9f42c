package net

import (
	"errors"
	"fmt"

	"kvmstack/netdev"
	"kvmstack/virtio"
	"kvmstack/vmm/memory"
)

// txPacket is one transmit chain cut into what goes to the TAP: a private
// copy of the header (so the guest cannot change it between the check and
// the write) followed by the frame's buffers, which alias guest memory.
type txPacket struct {
	hdr      [HdrLen]byte
	bufs     [][]byte
	frameLen int
}

// parseTx checks a transmit chain and fills p. It returns an error wrapping
// errMalformed for a chain that breaks the queue's rules and errBadHeader
// for a packet to drop. bufs is reused between calls.
func parseTx(mem *memory.Memory, c *virtio.Chain, features uint64, p *txPacket) error {
	p.bufs = p.bufs[:0]
	p.frameLen = 0
	var total uint64
	for _, d := range c.Descs {
		if d.Write {
			return fmt.Errorf("%w: device-writable buffer in a transmit chain", errMalformed)
		}
		total += uint64(d.Len)
	}
	if total < HdrLen {
		return fmt.Errorf("%w: %d-byte transmit chain has no room for the %d-byte header", errMalformed, total, HdrLen)
	}
	if total-HdrLen > maxFrame {
		return fmt.Errorf("%w: %d-byte frame exceeds %d", errMalformed, total-HdrLen, maxFrame)
	}
	skip := HdrLen // header bytes still to copy out
	for _, d := range c.Descs {
		b, err := mem.Slice(d.Addr, uint64(d.Len))
		if err != nil {
			// The queue checked the buffer when it popped the chain.
			return fmt.Errorf("%w: %w", errMalformed, err)
		}
		if skip > 0 {
			n := copy(p.hdr[HdrLen-skip:], b)
			skip -= n
			b = b[n:]
		}
		if len(b) > 0 {
			p.bufs = append(p.bufs, b)
			p.frameLen += len(b)
		}
	}
	if p.frameLen < minFrame {
		return fmt.Errorf("%w: %d-byte frame is shorter than an Ethernet header", errBadHeader, p.frameLen)
	}
	if err := checkTxHeader(p.hdr[:], p.frameLen, features); err != nil {
		return err
	}
	if len(p.bufs)+1 > netdev.MaxIOVecs {
		// Legal but beyond one writev: gather into one buffer.
		flat := make([]byte, 0, p.frameLen)
		for _, b := range p.bufs {
			flat = append(flat, b...)
		}
		p.bufs = append(p.bufs[:0], flat)
	}
	return nil
}

// txLoop runs the transmit queue until stop or a broken guest.
func (d *Device) txLoop(r *run) {
	defer r.wg.Done()
	q := r.act.Queues[txQueue]
	var p txPacket
	iov := make([][]byte, 0, 20)
	for {
		if err := q.DisableNotifications(); err != nil {
			r.broken(err)
			return
		}
		n := 0
		for {
			if wait := d.txLim.Delay(); wait > 0 {
				// Throttled: the packets stay in the available ring
				// (notifications stay off) until the tokens are there.
				r.interrupt(q, txQueue)
				if !d.txLim.Wait(wait, r.stop) {
					return
				}
				continue
			}
			c, err := q.Pop()
			if err != nil {
				r.broken(err)
				return
			}
			if c == nil {
				break
			}
			err = parseTx(r.act.Memory, c, r.act.Features, &p)
			// A dropped packet costs an operation, so a guest cannot
			// flood the device with bad ones for free.
			if err == nil {
				d.txLim.Charge(uint64(p.frameLen))
			} else {
				d.txLim.Charge(0)
			}
			switch {
			case errors.Is(err, errMalformed):
				r.broken(err)
				return
			case err != nil:
				d.stats.TxDropped.Add(1)
				d.log.Debug("virtio-net: dropped transmit packet", "err", err)
			default:
				iov = append(append(iov[:0], p.hdr[:]), p.bufs...)
				if _, err := d.backend.WritePacket(iov); err != nil {
					if r.stopping() {
						return
					}
					// The TAP refuses packets while it is down (EIO)
					// or when the host kernel rejects one: a loss on
					// the wire, not a device failure.
					d.stats.TxDropped.Add(1)
					d.log.Debug("virtio-net: tap write", "err", err)
				} else {
					d.stats.TxPackets.Add(1)
					d.stats.TxBytes.Add(uint64(p.frameLen))
				}
			}
			if err := q.Push(c.Head, 0); err != nil {
				r.broken(err)
				return
			}
			// Hand buffers back in batches while the guest keeps
			// queueing, so it does not run out of ring space.
			if n++; n%64 == 0 {
				r.interrupt(q, txQueue)
			}
		}
		r.interrupt(q, txQueue)
		more, err := q.EnableNotifications()
		if err != nil {
			r.broken(err)
			return
		}
		if more {
			continue
		}
		select {
		case <-r.act.Kicks[txQueue]:
		case <-r.stop:
			return
		}
	}
}
