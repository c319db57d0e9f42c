// Package block owns the virtio block device (virtio 1.2 section 5.2): the
// configuration space a guest's virtio_blk driver reads, the parsing of every
// request chain the guest submits, and their execution against a raw disk
// image through a Backend (a host file by default).
//
// Requests come from a possibly hostile guest. Each chain is parsed
// defensively (header, type, direction of every buffer, sector ranges
// against the capacity, the status byte as the last writable byte). A bad
// request that still has a writable status byte gets VIRTIO_BLK_S_IOERR or
// VIRTIO_BLK_S_UNSUPP; one without marks the device broken through
// virtio.Activation.Broken. Host I/O errors reach the guest as IOERR.
package block
