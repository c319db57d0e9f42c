package main

import "kvmstack/vmm/memory"

// hostAddr is the address KVM maps the benchmark guest's RAM from. unsafe
// stays in vmm/memory and vmm/kvm, so it goes through a one-region Memory
// view of the mapping.
func hostAddr(b []byte) uint64 { return uint64(memory.HostAddr(b)) }
