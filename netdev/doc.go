// Package netdev owns the host side of guest networking: TAP devices opened
// with virtio-net headers and checksum/segmentation offloads (the ioctls
// github.com/songgao/water does not expose), packet I/O on non-blocking
// descriptors driven by the Go runtime's poller, and network namespaces,
// veth pairs and addresses (github.com/vishvananda/netlink and netns) for
// tests and for the agent's per-host wiring.
package netdev
