// Command blockbench measures virtio-blk from inside the kit guest, vmm
// side by side with QEMU (virtio-blk-pci, same kit kernel, initrd and disk
// images): sequential 1 MiB O_DIRECT writes and reads, 4 KiB random read and
// write IOPS, and KVM exits per MiB moved in each phase. The guest program
// (guest/blkio.c, static) comes on a small read-only ext4 disk; the measured disk
// is a second, raw one. Every phase is bounded in time.
package main
