package kvm

import "testing"

// TestConstantsAgainstHeaders checks the exported constants against the
// macros of the same meaning in linux/kvm.h and asm/kvm.h.
func TestConstantsAgainstHeaders(t *testing.T) {
	consts := map[string]uint64{
		"KVM_CAP_IRQCHIP": uint64(CapIRQChip), "KVM_CAP_HLT": uint64(CapHLT),
		"KVM_CAP_USER_MEMORY": uint64(CapUserMemory), "KVM_CAP_SET_TSS_ADDR": uint64(CapSetTSSAddr),
		"KVM_CAP_EXT_CPUID": uint64(CapExtCPUID), "KVM_CAP_NR_VCPUS": uint64(CapNrVCPUs),
		"KVM_CAP_NR_MEMSLOTS": uint64(CapNrMemslots), "KVM_CAP_PIT": uint64(CapPIT),
		"KVM_CAP_MP_STATE": uint64(CapMPState), "KVM_CAP_SYNC_MMU": uint64(CapSyncMMU),
		"KVM_CAP_SET_GUEST_DEBUG": uint64(CapSetGuestDebug), "KVM_CAP_IRQ_ROUTING": uint64(CapIRQRouting),
		"KVM_CAP_IRQFD": uint64(CapIRQFD), "KVM_CAP_PIT2": uint64(CapPIT2),
		"KVM_CAP_PIT_STATE2": uint64(CapPITState2), "KVM_CAP_IOEVENTFD": uint64(CapIOEventFD),
		"KVM_CAP_SET_IDENTITY_MAP_ADDR": uint64(CapSetIdentityMapAddr), "KVM_CAP_ADJUST_CLOCK": uint64(CapAdjustClock),
		"KVM_CAP_INTERNAL_ERROR_DATA": uint64(CapInternalErrorData), "KVM_CAP_VCPU_EVENTS": uint64(CapVCPUEvents),
		"KVM_CAP_DEBUGREGS": uint64(CapDebugRegs), "KVM_CAP_ENABLE_CAP": uint64(CapEnableCap),
		"KVM_CAP_XSAVE": uint64(CapXSave), "KVM_CAP_XCRS": uint64(CapXCRS),
		"KVM_CAP_TSC_CONTROL": uint64(CapTSCControl), "KVM_CAP_GET_TSC_KHZ": uint64(CapGetTSCKHz),
		"KVM_CAP_MAX_VCPUS": uint64(CapMaxVCPUs), "KVM_CAP_ONE_REG": uint64(CapOneReg),
		"KVM_CAP_TSC_DEADLINE_TIMER": uint64(CapTSCDeadlineTimer), "KVM_CAP_KVMCLOCK_CTRL": uint64(CapKVMClockCtrl),
		"KVM_CAP_SIGNAL_MSI": uint64(CapSignalMSI), "KVM_CAP_READONLY_MEM": uint64(CapReadonlyMem),
		"KVM_CAP_IRQFD_RESAMPLE": uint64(CapIRQFDResample), "KVM_CAP_CHECK_EXTENSION_VM": uint64(CapCheckExtensionVM),
		"KVM_CAP_SPLIT_IRQCHIP": uint64(CapSplitIRQChip), "KVM_CAP_IOEVENTFD_ANY_LENGTH": uint64(CapIOEventFDAnyLength),
		"KVM_CAP_MAX_VCPU_ID": uint64(CapMaxVCPUID), "KVM_CAP_X2APIC_API": uint64(CapX2APICAPI),
		"KVM_CAP_MSI_DEVID": uint64(CapMSIDevID), "KVM_CAP_IMMEDIATE_EXIT": uint64(CapImmediateExit),
		"KVM_CAP_X86_DISABLE_EXITS": uint64(CapX86DisableExits), "KVM_CAP_GET_MSR_FEATURES": uint64(CapGetMSRFeatures),
		"KVM_CAP_EXCEPTION_PAYLOAD": uint64(CapExceptionPayload), "KVM_CAP_XSAVE2": uint64(CapXSave2),
		"KVM_CAP_SYSTEM_EVENT_DATA": uint64(CapSystemEventData), "KVM_CAP_X86_NOTIFY_VMEXIT": uint64(CapX86NotifyVMExit),
		"KVM_CAP_DIRTY_LOG_RING_ACQ_REL": uint64(CapDirtyLogRingAcqRel),

		"KVM_EXIT_UNKNOWN": uint64(ExitUnknown), "KVM_EXIT_EXCEPTION": uint64(ExitException),
		"KVM_EXIT_IO": uint64(ExitIO), "KVM_EXIT_HYPERCALL": uint64(ExitHypercall),
		"KVM_EXIT_DEBUG": uint64(ExitDebug), "KVM_EXIT_HLT": uint64(ExitHLT),
		"KVM_EXIT_MMIO": uint64(ExitMMIO), "KVM_EXIT_IRQ_WINDOW_OPEN": uint64(ExitIRQWindowOpen),
		"KVM_EXIT_SHUTDOWN": uint64(ExitShutdown), "KVM_EXIT_FAIL_ENTRY": uint64(ExitFailEntry),
		"KVM_EXIT_INTR": uint64(ExitIntr), "KVM_EXIT_SET_TPR": uint64(ExitSetTPR),
		"KVM_EXIT_TPR_ACCESS": uint64(ExitTPRAccess), "KVM_EXIT_NMI": uint64(ExitNMI),
		"KVM_EXIT_INTERNAL_ERROR": uint64(ExitInternalError), "KVM_EXIT_SYSTEM_EVENT": uint64(ExitSystemEvent),
		"KVM_EXIT_IOAPIC_EOI": uint64(ExitIOAPICEOI), "KVM_EXIT_HYPERV": uint64(ExitHyperV),
		"KVM_EXIT_X86_RDMSR": uint64(ExitX86RDMSR), "KVM_EXIT_X86_WRMSR": uint64(ExitX86WRMSR),
		"KVM_EXIT_DIRTY_RING_FULL": uint64(ExitDirtyRingFull), "KVM_EXIT_AP_RESET_HOLD": uint64(ExitAPResetHold),
		"KVM_EXIT_X86_BUS_LOCK": uint64(ExitX86BusLock), "KVM_EXIT_XEN": uint64(ExitXen),
		"KVM_EXIT_NOTIFY": uint64(ExitNotify),
		"KVM_EXIT_IO_IN":  ExitIOIn, "KVM_EXIT_IO_OUT": ExitIOOut,

		"KVM_INTERNAL_ERROR_EMULATION": uint64(InternalErrorEmulation), "KVM_INTERNAL_ERROR_SIMUL_EX": uint64(InternalErrorSimulEx),
		"KVM_INTERNAL_ERROR_DELIVERY_EV":                      uint64(InternalErrorDeliveryEv),
		"KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON":           uint64(InternalErrorUnexpectedExitReason),
		"KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES": EmulationFlagInstructionBytes,

		"KVM_SYSTEM_EVENT_SHUTDOWN": uint64(SystemEventShutdown), "KVM_SYSTEM_EVENT_RESET": uint64(SystemEventReset),
		"KVM_SYSTEM_EVENT_CRASH": uint64(SystemEventCrash), "KVM_SYSTEM_EVENT_WAKEUP": uint64(SystemEventWakeup),
		"KVM_SYSTEM_EVENT_SUSPEND": uint64(SystemEventSuspend), "KVM_SYSTEM_EVENT_SEV_TERM": uint64(SystemEventSEVTerm),

		"KVM_MP_STATE_RUNNABLE": uint64(MPStateRunnable), "KVM_MP_STATE_UNINITIALIZED": uint64(MPStateUninitialized),
		"KVM_MP_STATE_INIT_RECEIVED": uint64(MPStateInitReceived), "KVM_MP_STATE_HALTED": uint64(MPStateHalted),
		"KVM_MP_STATE_SIPI_RECEIVED": uint64(MPStateSIPIReceived), "KVM_MP_STATE_STOPPED": uint64(MPStateStopped),
		"KVM_MP_STATE_CHECK_STOP": uint64(MPStateCheckStop), "KVM_MP_STATE_OPERATING": uint64(MPStateOperating),
		"KVM_MP_STATE_LOAD": uint64(MPStateLoad), "KVM_MP_STATE_AP_RESET_HOLD": uint64(MPStateAPResetHold),
		"KVM_MP_STATE_SUSPENDED": uint64(MPStateSuspended),

		"KVM_CPUID_FLAG_SIGNIFCANT_INDEX": CPUIDFlagSignificantIndex,
		"KVM_CPUID_FLAG_STATEFUL_FUNC":    CPUIDFlagStatefulFunc,
		"KVM_CPUID_FLAG_STATE_READ_NEXT":  CPUIDFlagStateReadNext,

		"KVM_VCPUEVENT_VALID_NMI_PENDING": VCPUEventValidNMIPending, "KVM_VCPUEVENT_VALID_SIPI_VECTOR": VCPUEventValidSIPIVector,
		"KVM_VCPUEVENT_VALID_SHADOW": VCPUEventValidShadow, "KVM_VCPUEVENT_VALID_SMM": VCPUEventValidSMM,
		"KVM_VCPUEVENT_VALID_PAYLOAD": VCPUEventValidPayload, "KVM_VCPUEVENT_VALID_TRIPLE_FAULT": VCPUEventValidTripleFault,
		"KVM_X86_SHADOW_INT_MOV_SS": X86ShadowIntMovSS, "KVM_X86_SHADOW_INT_STI": X86ShadowIntSTI,
		"DE_VECTOR": DEVector, "DB_VECTOR": DBVector, "BP_VECTOR": BPVector, "UD_VECTOR": UDVector,
		"DF_VECTOR": DFVector, "GP_VECTOR": GPVector, "PF_VECTOR": PFVector,

		"KVM_NR_INTERRUPTS": NrInterrupts, "KVM_APIC_REG_SIZE": APICRegSize, "KVM_MAX_XCRS": MaxXCRs,
		"KVM_IOAPIC_NUM_PINS":     IOAPICNumPins,
		"KVM_MEM_LOG_DIRTY_PAGES": MemLogDirtyPages, "KVM_MEM_READONLY": MemReadonly,
		"KVM_IRQCHIP_PIC_MASTER": IRQChipPICMaster, "KVM_IRQCHIP_PIC_SLAVE": IRQChipPICSlave,
		"KVM_IRQCHIP_IOAPIC":    IRQChipIOAPIC,
		"KVM_PIT_SPEAKER_DUMMY": PITSpeakerDummy, "KVM_PIT_FLAGS_HPET_LEGACY": PITFlagsHPETLegacy,
		"KVM_PIT_FLAGS_SPEAKER_DATA_ON": PITFlagsSpeakerDataOn,
		"KVM_CLOCK_TSC_STABLE":          ClockTSCStable, "KVM_CLOCK_REALTIME": ClockRealtime, "KVM_CLOCK_HOST_TSC": ClockHostTSC,
		"KVM_IOEVENTFD_FLAG_DATAMATCH": IOEventFDFlagDatamatch, "KVM_IOEVENTFD_FLAG_PIO": IOEventFDFlagPIO,
		"KVM_IOEVENTFD_FLAG_DEASSIGN": IOEventFDFlagDeassign,
		"KVM_IRQFD_FLAG_DEASSIGN":     IRQFDFlagDeassign, "KVM_IRQFD_FLAG_RESAMPLE": IRQFDFlagResample,
		"KVM_IRQ_ROUTING_IRQCHIP": IRQRoutingTypeIRQChip, "KVM_IRQ_ROUTING_MSI": IRQRoutingTypeMSI,
		"KVM_MSI_VALID_DEVID": MSIValidDevID,
		"KVM_API_VERSION":     APIVersion,
	}
	exprs := make([]string, 0, len(consts))
	for name := range consts {
		exprs = append(exprs, name)
	}
	got := cValues(t, exprs)
	for name, v := range consts {
		if got[name] != v {
			t.Errorf("%s = %d in Go, %d in the headers", name, v, got[name])
		}
	}
}

func TestExitReasonString(t *testing.T) {
	tests := []struct {
		r    ExitReason
		want string
	}{
		{ExitIO, "IO"},
		{ExitInternalError, "INTERNAL_ERROR"},
		{ExitSystemEvent, "SYSTEM_EVENT"},
		{ExitReason(200), "EXIT_200"},
	}
	for _, tc := range tests {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("ExitReason(%d).String() = %q, want %q", uint32(tc.r), got, tc.want)
		}
	}
	if got := InternalErrorSuberror(9).String(); got != "SUBERROR_9" {
		t.Errorf("InternalErrorSuberror(9) = %q", got)
	}
	if got := SystemEventReset.String(); got != "RESET" {
		t.Errorf("SystemEventReset = %q", got)
	}
}
