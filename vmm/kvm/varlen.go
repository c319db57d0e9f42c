package kvm

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

// The kernel's variable-length structs (kvm_cpuid2, kvm_msrs, kvm_msr_list,
// kvm_irq_routing) are a fixed header followed by a flexible array. They
// are built here in 8-byte-aligned byte buffers whose exact size is known,
// so the kernel never reads or writes past Go memory.

const (
	sizeofCPUIDEntry2     = int(unsafe.Sizeof(CPUIDEntry2{}))
	sizeofMSREntry        = int(unsafe.Sizeof(MSREntry{}))
	sizeofIRQRoutingEntry = int(unsafe.Sizeof(IRQRoutingEntry{}))

	// maxCPUIDEntries bounds SupportedCPUID's buffer growth; KVM's own
	// limit (KVM_MAX_CPUID_ENTRIES) is 256.
	maxCPUIDEntries = 4096
	// maxMSRs bounds MSR list sizes and a single GET/SET_MSRS batch;
	// KVM rejects more than KVM_MAX_MSR_ENTRIES (255) per call anyway.
	maxMSRs = 16384
	// maxIRQRoutes is KVM_MAX_IRQ_ROUTES.
	maxIRQRoutes = 4096
)

// alignedBuf returns n zeroed bytes backed by uint64s, so every header and
// entry inside is naturally aligned as the kernel's structs are.
func alignedBuf(n int) []byte {
	words := make([]uint64, (n+7)/8)
	if len(words) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
}

// asBytes views a slice of a mirror struct as its raw bytes; the layout
// tests guarantee Go and C agree on those bytes.
func asBytes[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(zero)))
}

// marshalCPUID2 builds a struct kvm_cpuid2 holding entries.
func marshalCPUID2(entries []CPUIDEntry2) ([]byte, error) {
	if len(entries) > maxCPUIDEntries {
		return nil, fmt.Errorf("%d CPUID entries, limit %d", len(entries), maxCPUIDEntries)
	}
	buf := alignedBuf(sizeofKVMCPUID2 + len(entries)*sizeofCPUIDEntry2)
	binary.LittleEndian.PutUint32(buf[0:], uint32(len(entries)))
	copy(buf[sizeofKVMCPUID2:], asBytes(entries))
	return buf, nil
}

// unmarshalCPUID2 reads back the entries of a struct kvm_cpuid2 the kernel
// filled, trusting nent only as far as the buffer reaches.
func unmarshalCPUID2(buf []byte) ([]CPUIDEntry2, error) {
	if len(buf) < sizeofKVMCPUID2 {
		return nil, fmt.Errorf("kvm_cpuid2 buffer of %d bytes", len(buf))
	}
	n := int(binary.LittleEndian.Uint32(buf[0:]))
	if room := (len(buf) - sizeofKVMCPUID2) / sizeofCPUIDEntry2; n > room {
		return nil, fmt.Errorf("kvm_cpuid2 reports %d entries, buffer holds %d", n, room)
	}
	out := make([]CPUIDEntry2, n)
	copy(asBytes(out), buf[sizeofKVMCPUID2:])
	return out, nil
}

// marshalMSRs builds a struct kvm_msrs holding entries.
func marshalMSRs(entries []MSREntry) ([]byte, error) {
	if len(entries) > maxMSRs {
		return nil, fmt.Errorf("%d MSR entries, limit %d", len(entries), maxMSRs)
	}
	buf := alignedBuf(sizeofKVMMSRs + len(entries)*sizeofMSREntry)
	binary.LittleEndian.PutUint32(buf[0:], uint32(len(entries)))
	copy(buf[sizeofKVMMSRs:], asBytes(entries))
	return buf, nil
}

// unmarshalMSRs copies the first n entries of a struct kvm_msrs into dst.
func unmarshalMSRs(buf []byte, dst []MSREntry) {
	copy(asBytes(dst), buf[sizeofKVMMSRs:])
}

// unmarshalMSRList reads the indices of a struct kvm_msr_list.
func unmarshalMSRList(buf []byte) ([]uint32, error) {
	if len(buf) < sizeofKVMMSRList {
		return nil, fmt.Errorf("kvm_msr_list buffer of %d bytes", len(buf))
	}
	n := int(binary.LittleEndian.Uint32(buf[0:]))
	if room := (len(buf) - sizeofKVMMSRList) / 4; n > room {
		return nil, fmt.Errorf("kvm_msr_list reports %d indices, buffer holds %d", n, room)
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(buf[sizeofKVMMSRList+4*i:])
	}
	return out, nil
}

// marshalIRQRouting builds a struct kvm_irq_routing holding entries.
func marshalIRQRouting(entries []IRQRoutingEntry) ([]byte, error) {
	if len(entries) > maxIRQRoutes {
		return nil, fmt.Errorf("%d IRQ routes, limit %d", len(entries), maxIRQRoutes)
	}
	buf := alignedBuf(sizeofKVMIRQRouting + len(entries)*sizeofIRQRoutingEntry)
	binary.LittleEndian.PutUint32(buf[0:], uint32(len(entries)))
	copy(buf[sizeofKVMIRQRouting:], asBytes(entries))
	return buf, nil
}

func putU32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
func getU32(b []byte, off int) uint32    { return binary.LittleEndian.Uint32(b[off:]) }
