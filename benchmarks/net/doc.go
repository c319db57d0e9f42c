// Command netbench measures virtio-net between a guest and its host: TCP
// throughput each way for a fixed time, ICMP round-trip latency, and KVM
// exits per MiB moved, for vmm and for QEMU (virtio-net-pci on the same
// tap, without vhost) booting the same kit kernel and initrd. Everything
// runs inside a network namespace it creates; no packet leaves it.
package main
