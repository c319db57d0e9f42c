package x86

import (
	"slices"

	"kvmstack/vmm/kvm"
)

// Model-specific registers the boot state touches.
const (
	MSRIA32SysenterCS    = 0x174
	MSRIA32SysenterESP   = 0x175
	MSRIA32SysenterEIP   = 0x176
	MSRIA32MiscEnable    = 0x1A0
	MSRIA32ArchCaps      = 0x10A
	MSRMTRRDefType       = 0x2FF
	MSRSTAR              = 0xC000_0081
	MSRLSTAR             = 0xC000_0082
	MSRCSTAR             = 0xC000_0083
	MSRSyscallMask       = 0xC000_0084
	MSRKernelGSBase      = 0xC000_0102
	miscEnableFastString = 1 << 0
	mtrrDefTypeEnable    = 1 << 11
	mtrrTypeWriteBack    = 6
)

// bootMSRs is the state PC firmware leaves: system-call MSRs clear (the
// kernel programs them), fast strings on, MTRRs enabled with write-back as
// the default type so that the guest's view of memory is cacheable without
// any variable ranges.
var bootMSRs = []kvm.MSREntry{
	{Index: MSRIA32SysenterCS},
	{Index: MSRIA32SysenterESP},
	{Index: MSRIA32SysenterEIP},
	{Index: MSRSTAR},
	{Index: MSRLSTAR},
	{Index: MSRCSTAR},
	{Index: MSRKernelGSBase},
	{Index: MSRSyscallMask},
	{Index: MSRIA32MiscEnable, Data: miscEnableFastString},
	{Index: MSRMTRRDefType, Data: mtrrDefTypeEnable | mtrrTypeWriteBack},
}

// BootMSRs returns the boot MSR values for one vCPU, keeping only the MSRs
// in supported (KVM_GET_MSR_INDEX_LIST): an MSR this host's KVM does not
// list is left to its reset value rather than failing KVM_SET_MSRS.
// IA32_ARCH_CAPABILITIES (0x10A) is never in the result, even when listed:
// writing it fails on the emulating host and nothing at boot needs it.
func BootMSRs(supported []uint32) []kvm.MSREntry {
	var out []kvm.MSREntry
	for _, e := range bootMSRs {
		if e.Index != MSRIA32ArchCaps && slices.Contains(supported, e.Index) {
			out = append(out, e)
		}
	}
	return out
}
