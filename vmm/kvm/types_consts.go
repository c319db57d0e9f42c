package kvm

import "strconv"

// Cap is a KVM capability number, as passed to KVM_CHECK_EXTENSION and
// KVM_ENABLE_CAP (KVM_CAP_* in linux/kvm.h).
type Cap uint32

// Capabilities kvmstack queries or enables.
const (
	CapIRQChip            Cap = 0
	CapHLT                Cap = 1
	CapUserMemory         Cap = 3
	CapSetTSSAddr         Cap = 4
	CapExtCPUID           Cap = 7
	CapNrVCPUs            Cap = 9
	CapNrMemslots         Cap = 10
	CapPIT                Cap = 11
	CapMPState            Cap = 14
	CapSyncMMU            Cap = 16
	CapSetGuestDebug      Cap = 23
	CapIRQRouting         Cap = 25
	CapIRQFD              Cap = 32
	CapPIT2               Cap = 33
	CapPITState2          Cap = 35
	CapIOEventFD          Cap = 36
	CapSetIdentityMapAddr Cap = 37
	CapAdjustClock        Cap = 39
	CapInternalErrorData  Cap = 40
	CapVCPUEvents         Cap = 41
	CapDebugRegs          Cap = 50
	CapEnableCap          Cap = 54
	CapXSave              Cap = 55
	CapXCRS               Cap = 56
	CapTSCControl         Cap = 60
	CapGetTSCKHz          Cap = 61
	CapMaxVCPUs           Cap = 66
	CapOneReg             Cap = 70
	CapTSCDeadlineTimer   Cap = 72
	CapKVMClockCtrl       Cap = 76
	CapSignalMSI          Cap = 77
	CapReadonlyMem        Cap = 81
	CapIRQFDResample      Cap = 82
	CapCheckExtensionVM   Cap = 105
	CapSplitIRQChip       Cap = 121
	CapIOEventFDAnyLength Cap = 122
	CapMaxVCPUID          Cap = 128
	CapX2APICAPI          Cap = 129
	CapMSIDevID           Cap = 131
	CapImmediateExit      Cap = 136
	CapX86DisableExits    Cap = 143
	CapGetMSRFeatures     Cap = 153
	CapExceptionPayload   Cap = 164
	CapXSave2             Cap = 208
	CapSystemEventData    Cap = 215
	CapX86NotifyVMExit    Cap = 219
	CapDirtyLogRingAcqRel Cap = 223
)

// ExitReason is kvm_run.exit_reason (KVM_EXIT_* in linux/kvm.h).
type ExitReason uint32

// Exit reasons. Only the x86 ones the VMM can meet are named.
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitSetTPR        ExitReason = 11
	ExitTPRAccess     ExitReason = 12
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
	ExitIOAPICEOI     ExitReason = 26
	ExitHyperV        ExitReason = 27
	ExitX86RDMSR      ExitReason = 29
	ExitX86WRMSR      ExitReason = 30
	ExitDirtyRingFull ExitReason = 31
	ExitAPResetHold   ExitReason = 32
	ExitX86BusLock    ExitReason = 33
	ExitXen           ExitReason = 34
	ExitNotify        ExitReason = 37
)

var exitReasonNames = map[ExitReason]string{
	ExitUnknown:       "UNKNOWN",
	ExitException:     "EXCEPTION",
	ExitIO:            "IO",
	ExitHypercall:     "HYPERCALL",
	ExitDebug:         "DEBUG",
	ExitHLT:           "HLT",
	ExitMMIO:          "MMIO",
	ExitIRQWindowOpen: "IRQ_WINDOW_OPEN",
	ExitShutdown:      "SHUTDOWN",
	ExitFailEntry:     "FAIL_ENTRY",
	ExitIntr:          "INTR",
	ExitSetTPR:        "SET_TPR",
	ExitTPRAccess:     "TPR_ACCESS",
	ExitNMI:           "NMI",
	ExitInternalError: "INTERNAL_ERROR",
	ExitSystemEvent:   "SYSTEM_EVENT",
	ExitIOAPICEOI:     "IOAPIC_EOI",
	ExitHyperV:        "HYPERV",
	ExitX86RDMSR:      "X86_RDMSR",
	ExitX86WRMSR:      "X86_WRMSR",
	ExitDirtyRingFull: "DIRTY_RING_FULL",
	ExitAPResetHold:   "AP_RESET_HOLD",
	ExitX86BusLock:    "X86_BUS_LOCK",
	ExitXen:           "XEN",
	ExitNotify:        "NOTIFY",
}

// String returns the kernel's name without the KVM_EXIT_ prefix, so logs
// can be grepped against linux/kvm.h.
func (r ExitReason) String() string {
	if s, ok := exitReasonNames[r]; ok {
		return s
	}
	return "EXIT_" + strconv.FormatUint(uint64(r), 10)
}

// InternalErrorSuberror is kvm_run.internal.suberror (KVM_INTERNAL_ERROR_*).
type InternalErrorSuberror uint32

// Internal error suberrors.
const (
	// InternalErrorEmulation: the instruction emulator could not handle
	// the instruction; with KVM_CAP_INTERNAL_ERROR_DATA data[0] holds
	// flags and, when EmulationFlagInstructionBytes is set, the bytes.
	InternalErrorEmulation            InternalErrorSuberror = 1
	InternalErrorSimulEx              InternalErrorSuberror = 2
	InternalErrorDeliveryEv           InternalErrorSuberror = 3
	InternalErrorUnexpectedExitReason InternalErrorSuberror = 4
)

// EmulationFlagInstructionBytes is KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES:
// set in the emulation-failure flags when insn_size/insn_bytes are valid.
const EmulationFlagInstructionBytes = 1 << 0

// String names the suberror like the kernel header does.
func (s InternalErrorSuberror) String() string {
	switch s {
	case InternalErrorEmulation:
		return "EMULATION"
	case InternalErrorSimulEx:
		return "SIMUL_EX"
	case InternalErrorDeliveryEv:
		return "DELIVERY_EV"
	case InternalErrorUnexpectedExitReason:
		return "UNEXPECTED_EXIT_REASON"
	}
	return "SUBERROR_" + strconv.FormatUint(uint64(s), 10)
}

// SystemEventType is kvm_run.system_event.type (KVM_SYSTEM_EVENT_*).
type SystemEventType uint32

// System event types.
const (
	SystemEventShutdown SystemEventType = 1
	SystemEventReset    SystemEventType = 2
	SystemEventCrash    SystemEventType = 3
	SystemEventWakeup   SystemEventType = 4
	SystemEventSuspend  SystemEventType = 5
	SystemEventSEVTerm  SystemEventType = 6
)

// String names the event like the kernel header does.
func (t SystemEventType) String() string {
	switch t {
	case SystemEventShutdown:
		return "SHUTDOWN"
	case SystemEventReset:
		return "RESET"
	case SystemEventCrash:
		return "CRASH"
	case SystemEventWakeup:
		return "WAKEUP"
	case SystemEventSuspend:
		return "SUSPEND"
	case SystemEventSEVTerm:
		return "SEV_TERM"
	}
	return "EVENT_" + strconv.FormatUint(uint64(t), 10)
}

// IO directions in kvm_run.io.direction.
const (
	ExitIOIn  = 0
	ExitIOOut = 1
)
