// Package rng owns the virtio entropy device (virtio 1.2 section 5.4): one
// request queue whose device-writable buffers it fills from the host's
// getrandom(2).
package rng
