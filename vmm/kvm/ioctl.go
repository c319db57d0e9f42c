package kvm

import (
	"errors"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Request-number encoding from include/uapi/asm-generic/ioctl.h, which
// x86 uses unchanged.
const (
	iocNRBits   = 8
	iocTypeBits = 8
	iocSizeBits = 14

	iocNRShift   = 0
	iocTypeShift = iocNRShift + iocNRBits
	iocSizeShift = iocTypeShift + iocTypeBits
	iocDirShift  = iocSizeShift + iocSizeBits

	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	kvmIO = 0xAE
)

func ioc(dir, nr, size uintptr) uintptr {
	if size >= 1<<iocSizeBits {
		// The kernel's _IOC_TYPECHECK would refuse this at compile time;
		// a silent overflow here would produce a different ioctl.
		panic("kvm: ioctl argument size does not fit the size field")
	}
	return dir<<iocDirShift | kvmIO<<iocTypeShift | nr<<iocNRShift | size<<iocSizeShift
}

func io(nr uintptr) uintptr         { return ioc(iocNone, nr, 0) }
func ior(nr, size uintptr) uintptr  { return ioc(iocRead, nr, size) }
func iow(nr, size uintptr) uintptr  { return ioc(iocWrite, nr, size) }
func iowr(nr, size uintptr) uintptr { return ioc(iocRead|iocWrite, nr, size) }

// Variable-length structs are passed with the size of their fixed header,
// as the kernel's macros do (flexible array members have size 0).
const (
	sizeofKVMMSRs       = 8
	sizeofKVMMSRList    = 4
	sizeofKVMCPUID2     = 8
	sizeofKVMIRQRouting = 8
)

// ioctl numbers, named as in linux/kvm.h.
var (
	kvmGetAPIVersion          = io(0x00)
	kvmCreateVM               = io(0x01)
	kvmGetMSRIndexList        = iowr(0x02, sizeofKVMMSRList)
	kvmCheckExtension         = io(0x03)
	kvmGetVCPUMmapSize        = io(0x04)
	kvmGetSupportedCPUID      = iowr(0x05, sizeofKVMCPUID2)
	kvmGetMSRFeatureIndexList = iowr(0x0a, sizeofKVMMSRList)
	kvmCreateVCPU             = io(0x41)
	kvmSetUserMemoryRegion    = iow(0x46, unsafe.Sizeof(UserspaceMemoryRegion{}))
	kvmSetTSSAddr             = io(0x47)
	kvmSetIdentityMapAddr     = iow(0x48, 8)
	kvmCreateIRQChip          = io(0x60)
	kvmIRQLine                = iow(0x61, unsafe.Sizeof(irqLevel{}))
	kvmGetIRQChip             = iowr(0x62, unsafe.Sizeof(IRQChip{}))
	kvmSetIRQChip             = ior(0x63, unsafe.Sizeof(IRQChip{}))
	kvmSetGSIRouting          = iow(0x6a, sizeofKVMIRQRouting)
	kvmIRQFD                  = iow(0x76, unsafe.Sizeof(IRQFD{}))
	kvmCreatePIT2             = iow(0x77, unsafe.Sizeof(PITConfig{}))
	kvmIOEventFD              = iow(0x79, unsafe.Sizeof(IOEventFD{}))
	kvmSetClock               = iow(0x7b, unsafe.Sizeof(ClockData{}))
	kvmGetClock               = ior(0x7c, unsafe.Sizeof(ClockData{}))
	kvmGetPIT2                = ior(0x9f, unsafe.Sizeof(PITState2{}))
	kvmSetPIT2                = iow(0xa0, unsafe.Sizeof(PITState2{}))
	kvmSignalMSI              = iow(0xa5, unsafe.Sizeof(MSI{}))
	kvmEnableCap              = iow(0xa3, unsafe.Sizeof(EnableCap{}))
	kvmRun                    = io(0x80)
	kvmGetRegs                = ior(0x81, unsafe.Sizeof(Regs{}))
	kvmSetRegs                = iow(0x82, unsafe.Sizeof(Regs{}))
	kvmGetSregs               = ior(0x83, unsafe.Sizeof(Sregs{}))
	kvmSetSregs               = iow(0x84, unsafe.Sizeof(Sregs{}))
	kvmTranslate              = iowr(0x85, unsafe.Sizeof(Translation{}))
	kvmInterrupt              = iow(0x86, 4)
	kvmGetMSRs                = iowr(0x88, sizeofKVMMSRs)
	kvmSetMSRs                = iow(0x89, sizeofKVMMSRs)
	kvmGetFPU                 = ior(0x8c, unsafe.Sizeof(FPU{}))
	kvmSetFPU                 = iow(0x8d, unsafe.Sizeof(FPU{}))
	kvmGetLAPIC               = ior(0x8e, unsafe.Sizeof(LAPICState{}))
	kvmSetLAPIC               = iow(0x8f, unsafe.Sizeof(LAPICState{}))
	kvmSetCPUID2              = iow(0x90, sizeofKVMCPUID2)
	kvmGetCPUID2              = iowr(0x91, sizeofKVMCPUID2)
	kvmGetMPState             = ior(0x98, unsafe.Sizeof(MPState(0)))
	kvmSetMPState             = iow(0x99, unsafe.Sizeof(MPState(0)))
	kvmNMI                    = io(0x9a)
	kvmGetVCPUEvents          = ior(0x9f, unsafe.Sizeof(VCPUEvents{}))
	kvmSetVCPUEvents          = iow(0xa0, unsafe.Sizeof(VCPUEvents{}))
	kvmSetTSCKHz              = io(0xa2)
	kvmGetTSCKHz              = io(0xa3)
	kvmGetXSave               = ior(0xa4, XSaveSize)
	kvmSetXSave               = iow(0xa5, XSaveSize)
	kvmGetXCRS                = ior(0xa6, unsafe.Sizeof(XCRs{}))
	kvmSetXCRS                = iow(0xa7, unsafe.Sizeof(XCRs{}))
	kvmKVMClockCtrl           = io(0xad)
	kvmGetXSave2              = ior(0xcf, XSaveSize)
)

// ioctlPtr issues an ioctl whose argument is a pointer to Go memory. The
// pointer is converted in the call expression and kept alive past the
// syscall so the collector cannot free the argument while the kernel
// reads or writes it (Go's collector does not move heap objects).
func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		runtime.KeepAlive(arg)
		if errno == 0 {
			return r, nil
		}
		// Configuration ioctls are restartable; only KVM_RUN gives EINTR
		// a meaning of its own and it does not come through here.
		if errno == unix.EINTR {
			continue
		}
		return r, errno
	}
}

// ioctlVal issues an ioctl whose argument is a plain integer.
func ioctlVal(fd int, req uintptr, arg uintptr) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if errno == 0 {
			return r, nil
		}
		if errno == unix.EINTR {
			continue
		}
		return r, errno
	}
}

// errnoOf extracts the errno from an ioctl error for callers branching on
// it (E2BIG when growing buffers).
func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}
