package kvm

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultPath is where the KVM device node lives.
const DefaultPath = "/dev/kvm"

// APIVersion is the only KVM_GET_API_VERSION value the kernel has ever
// returned; anything else means a different ABI.
const APIVersion = 12

// ErrNoKVM means the host has no usable KVM device node (absent, or no
// driver bound to it). It wraps the underlying errno, so both
// errors.Is(err, ErrNoKVM) and errors.Is(err, unix.ENOENT) hold.
var ErrNoKVM = errors.New("no /dev/kvm")

// System is an open /dev/kvm: the handle for system-wide queries and for
// creating VMs.
type System struct {
	fd       int
	mmapSize int
}

// Open opens the KVM device at path ("" means DefaultPath) and checks the
// API version.
func Open(path string) (*System, error) {
	if path == "" {
		path = DefaultPath
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("%w: open %s: %w", ErrNoKVM, path, err)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &System{fd: fd}
	v, err := s.APIVersion()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if v != APIVersion {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: KVM API version %d, want %d", path, v, APIVersion)
	}
	n, err := ioctlVal(fd, kvmGetVCPUMmapSize, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	if int(n) < runSize {
		unix.Close(fd)
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %d bytes, smaller than struct kvm_run (%d)", n, runSize)
	}
	s.mmapSize = int(n)
	return s, nil
}

// FD returns the device's file descriptor (for diagnostics; do not close it).
func (s *System) FD() int { return s.fd }

// Close closes the device. VMs created from it stay valid.
func (s *System) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	if err != nil {
		return fmt.Errorf("close /dev/kvm: %w", err)
	}
	return nil
}

// APIVersion returns KVM_GET_API_VERSION.
func (s *System) APIVersion() (int, error) {
	v, err := ioctlVal(s.fd, kvmGetAPIVersion, 0)
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_API_VERSION: %w", err)
	}
	return int(v), nil
}

// CheckExtension returns KVM_CHECK_EXTENSION for c: 0 when unsupported,
// otherwise 1 or a capability-specific value (a count or size).
func (s *System) CheckExtension(c Cap) (int, error) {
	return checkExtension(s.fd, c)
}

func checkExtension(fd int, c Cap) (int, error) {
	v, err := ioctlVal(fd, kvmCheckExtension, uintptr(c))
	if err != nil {
		return 0, fmt.Errorf("KVM_CHECK_EXTENSION(%d): %w", c, err)
	}
	return int(int32(v)), nil
}

// VCPUMmapSize returns KVM_GET_VCPU_MMAP_SIZE, the length of each vCPU's
// kvm_run mapping (including the PIO data page after it).
func (s *System) VCPUMmapSize() int { return s.mmapSize }

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID: every leaf KVM can
// expose, with the bits it can virtualize. The buffer grows on E2BIG.
func (s *System) SupportedCPUID() ([]CPUIDEntry2, error) {
	for n := 128; ; n *= 2 {
		buf, err := marshalCPUID2(make([]CPUIDEntry2, n))
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
		}
		_, err = ioctlPtr(s.fd, kvmGetSupportedCPUID, unsafe.Pointer(&buf[0]))
		if errnoOf(err) == unix.E2BIG && n < maxCPUIDEntries {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
		}
		entries, err := unmarshalCPUID2(buf)
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
		}
		return entries, nil
	}
}

// MSRIndexList returns KVM_GET_MSR_INDEX_LIST: the MSRs KVM saves and
// restores for a vCPU.
func (s *System) MSRIndexList() ([]uint32, error) {
	return s.msrList(kvmGetMSRIndexList, "KVM_GET_MSR_INDEX_LIST")
}

// FeatureMSRIndexList returns KVM_GET_MSR_FEATURE_INDEX_LIST: the
// feature-reporting MSRs readable with KVM_GET_MSRS on the system fd.
func (s *System) FeatureMSRIndexList() ([]uint32, error) {
	return s.msrList(kvmGetMSRFeatureIndexList, "KVM_GET_MSR_FEATURE_INDEX_LIST")
}

// msrList asks for the count first (nmsrs=0 → E2BIG with nmsrs set), then
// fetches, retrying if the count grew in between.
func (s *System) msrList(req uintptr, name string) ([]uint32, error) {
	n := 0
	for range 8 {
		buf := alignedBuf(sizeofKVMMSRList + 4*n)
		putU32(buf, 0, uint32(n))
		_, err := ioctlPtr(s.fd, req, unsafe.Pointer(&buf[0]))
		if errnoOf(err) == unix.E2BIG {
			got := int(getU32(buf, 0))
			if got <= n || got > maxMSRs {
				return nil, fmt.Errorf("%s: E2BIG with %d entries requested, kernel wants %d", name, n, got)
			}
			n = got
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out, err := unmarshalMSRList(buf)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: list size kept changing", name)
}

// CreateVM creates a VM of the default type.
func (s *System) CreateVM() (*VM, error) {
	fd, err := ioctlVal(s.fd, kvmCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	return &VM{fd: int(fd), mmapSize: s.mmapSize}, nil
}
