// Package virtio owns the transport-independent half of virtio 1.x devices:
// the split virtqueue (every guest-written index, address and length checked
// before use), the Device interface that device models implement, feature
// bits and the device status register. Transports (virtio/pci) drive a Device
// through this package; device models (virtio/block, net, rng) consume
// Queues and never touch guest rings themselves.
package virtio
