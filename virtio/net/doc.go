// Package net owns the virtio-net device model: its configuration space
// (MAC address, link status), feature negotiation with the TAP's offloads,
// and the receive and transmit workers that move frames between guest
// buffers and a netdev.Tap. Frames and their virtio-net headers travel
// between guest memory and the TAP by scatter/gather I/O, without copies in
// between, and with checksum and segmentation offloads passed straight
// through when the guest and the TAP both accept them.
package net
