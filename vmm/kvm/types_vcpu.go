package kvm

import "encoding/binary"

// Regs mirrors struct kvm_regs (KVM_GET_REGS / KVM_SET_REGS).
type Regs struct {
	RAX, RBX, RCX, RDX uint64
	RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11   uint64
	R12, R13, R14, R15 uint64
	RIP, RFLAGS        uint64
}

// Segment mirrors struct kvm_segment: a segment register's hidden part.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	Padding  uint8
}

// DTable mirrors struct kvm_dtable (GDTR / IDTR).
type DTable struct {
	Base    uint64
	Limit   uint16
	Padding [3]uint16
}

// NrInterrupts is KVM_NR_INTERRUPTS, the size of the interrupt bitmap.
const NrInterrupts = 256

// Sregs mirrors struct kvm_sregs (KVM_GET_SREGS / KVM_SET_SREGS).
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	// InterruptBitmap holds one pending external interrupt at most; a
	// set bit is injected on the next entry.
	InterruptBitmap [(NrInterrupts + 63) / 64]uint64
}

// FPU mirrors struct kvm_fpu (KVM_GET_FPU / KVM_SET_FPU), in FXSAVE format.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	Pad1       uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	Pad2       uint32
}

// XSaveSize is sizeof(struct kvm_xsave): the fixed part every KVM accepts.
const XSaveSize = 4096

// XSave mirrors struct kvm_xsave. Region is the fixed 4 KiB the legacy
// KVM_GET_XSAVE/KVM_SET_XSAVE move; Extra is the tail beyond it that
// KVM_GET_XSAVE2 fills when KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) on the VM
// reports a larger size (dynamic features such as AMX). Offsets inside
// follow the host's CPUID leaf 0xD.
type XSave struct {
	Region [XSaveSize / 4]uint32
	Extra  []uint32
}

// MSREntry mirrors struct kvm_msr_entry.
type MSREntry struct {
	Index    uint32
	Reserved uint32
	Data     uint64
}

// CPUIDEntry2 mirrors struct kvm_cpuid_entry2.
type CPUIDEntry2 struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	Padding  [3]uint32
}

// CPUID entry flags (KVM_CPUID_FLAG_*).
const (
	// CPUIDFlagSignificantIndex: the entry applies only to its Index
	// (subleaf); without it the entry answers every subleaf.
	CPUIDFlagSignificantIndex = 1 << 0
	CPUIDFlagStatefulFunc     = 1 << 1
	CPUIDFlagStateReadNext    = 1 << 2
)

// APICRegSize is KVM_APIC_REG_SIZE.
const APICRegSize = 0x400

// LAPICState mirrors struct kvm_lapic_state: the local APIC's register page
// as KVM stores it (xAPIC layout, one 32-bit register every 16 bytes).
type LAPICState struct {
	Regs [APICRegSize]uint8
}

// Reg32 reads the 32-bit APIC register at byte offset off (e.g. 0x350 for
// LVT LINT0). Offsets outside the page or unaligned return 0, false.
func (l *LAPICState) Reg32(off int) (uint32, bool) {
	if off < 0 || off%4 != 0 || off+4 > len(l.Regs) {
		return 0, false
	}
	return binary.LittleEndian.Uint32(l.Regs[off:]), true
}

// SetReg32 writes the 32-bit APIC register at byte offset off; it reports
// false and changes nothing when off is outside the page or unaligned.
func (l *LAPICState) SetReg32(off int, v uint32) bool {
	if off < 0 || off%4 != 0 || off+4 > len(l.Regs) {
		return false
	}
	binary.LittleEndian.PutUint32(l.Regs[off:], v)
	return true
}

// MPState mirrors struct kvm_mp_state (a single __u32).
type MPState uint32

// MP states (KVM_MP_STATE_*).
const (
	MPStateRunnable      MPState = 0
	MPStateUninitialized MPState = 1
	MPStateInitReceived  MPState = 2
	MPStateHalted        MPState = 3
	MPStateSIPIReceived  MPState = 4
	MPStateStopped       MPState = 5
	MPStateCheckStop     MPState = 6
	MPStateOperating     MPState = 7
	MPStateLoad          MPState = 8
	MPStateAPResetHold   MPState = 9
	MPStateSuspended     MPState = 10
)

// VCPUEventsException mirrors the exception member of kvm_vcpu_events.
type VCPUEventsException struct {
	Injected     uint8
	Nr           uint8
	HasErrorCode uint8
	Pending      uint8
	ErrorCode    uint32
}

// VCPUEventsInterrupt mirrors the interrupt member of kvm_vcpu_events.
type VCPUEventsInterrupt struct {
	Injected uint8
	Nr       uint8
	Soft     uint8
	Shadow   uint8
}

// VCPUEventsNMI mirrors the nmi member of kvm_vcpu_events.
type VCPUEventsNMI struct {
	Injected uint8
	Pending  uint8
	Masked   uint8
	Pad      uint8
}

// VCPUEventsSMI mirrors the smi member of kvm_vcpu_events.
type VCPUEventsSMI struct {
	SMM          uint8
	Pending      uint8
	SMMInsideNMI uint8
	LatchedInit  uint8
}

// VCPUEventsTripleFault mirrors the triple_fault member of kvm_vcpu_events.
type VCPUEventsTripleFault struct {
	Pending uint8
}

// VCPUEvents mirrors struct kvm_vcpu_events (KVM_GET/SET_VCPU_EVENTS).
type VCPUEvents struct {
	Exception           VCPUEventsException
	Interrupt           VCPUEventsInterrupt
	NMI                 VCPUEventsNMI
	SIPIVector          uint32
	Flags               uint32
	SMI                 VCPUEventsSMI
	TripleFault         VCPUEventsTripleFault
	Reserved            [26]uint8
	ExceptionHasPayload uint8
	ExceptionPayload    uint64
}

// VCPUEvents.Flags bits (KVM_VCPUEVENT_VALID_*): on KVM_SET_VCPU_EVENTS
// they say which optional members KVM must take from the struct.
const (
	VCPUEventValidNMIPending  = 0x01
	VCPUEventValidSIPIVector  = 0x02
	VCPUEventValidShadow      = 0x04
	VCPUEventValidSMM         = 0x08
	VCPUEventValidPayload     = 0x10
	VCPUEventValidTripleFault = 0x20
)

// Interrupt shadow states for VCPUEvents.Interrupt.Shadow.
const (
	X86ShadowIntMovSS = 0x01
	X86ShadowIntSTI   = 0x02
)

// Exception vectors used with VCPUEvents.Exception.Nr.
const (
	DEVector = 0
	DBVector = 1
	BPVector = 3
	UDVector = 6
	DFVector = 8
	GPVector = 13
	PFVector = 14
)

// MaxXCRs is KVM_MAX_XCRS.
const MaxXCRs = 16

// XCR mirrors struct kvm_xcr.
type XCR struct {
	XCR      uint32
	Reserved uint32
	Value    uint64
}

// XCRs mirrors struct kvm_xcrs (KVM_GET_XCRS / KVM_SET_XCRS).
type XCRs struct {
	NrXCRs  uint32
	Flags   uint32
	XCRs    [MaxXCRs]XCR
	Padding [16]uint64
}

// Translation mirrors struct kvm_translation (KVM_TRANSLATE).
type Translation struct {
	LinearAddress   uint64
	PhysicalAddress uint64
	Valid           uint8
	Writeable       uint8
	Usermode        uint8
	Pad             [5]uint8
}
