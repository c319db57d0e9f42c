package x86

import (
	"cmp"
	"math/bits"
	"slices"

	"kvmstack/vmm/kvm"
)

// CPUID leaves ShapeCPUID edits.
const (
	leafVendor      = 0x0
	leafFeatures    = 0x1
	leafCacheParams = 0x4
	leafStructExt   = 0x7
	leafPMU         = 0xA
	leafTopology    = 0xB
	leafXSAVE       = 0xD
	leafTopologyV2  = 0x1F
	leafKVMSig      = 0x4000_0000
	leafKVMFeatures = 0x4000_0001
	leafExtMax      = 0x8000_0000
	leafExtFeatures = 0x8000_0001
	leafAddrSizes   = 0x8000_0008
	leafAMDCache    = 0x8000_001D
	leafAMDTopology = 0x8000_001E
)

// Topology places one vCPU in the machine: its APIC ID and the number of
// vCPUs. The guest sees one socket, one thread per core, CPUs cores.
type Topology struct {
	APICID int
	CPUs   int
}

// cpuidReg names a CPUID output register.
type cpuidReg int

const (
	rEAX cpuidReg = iota
	rEBX
	rECX
	rEDX
)

// featureFamily says why a feature is hidden, and so on which hosts.
type featureFamily int

const (
	// familyEmulator: an instruction the emulating host's emulator
	// cannot run at CPL 0. Hidden on the emulating host only.
	familyEmulator featureFamily = iota
	// familyXSAVE: XSAVE and what needs its state (AVX and the other
	// VEX/EVEX families, PKU, AMX). Hidden on the emulating host and on
	// hosts where a guest's xsetbv does not reach KVM.
	familyXSAVE
)

// hiddenFeature is a CPUID feature bit a host profile removes.
type hiddenFeature struct {
	leaf, subleaf uint32
	reg           cpuidReg
	bit           uint
	family        featureFamily
	// clearcpuid is the name Linux's clearcpuid= takes for the bit, set
	// only when the guest's command line must name it: KVM_SET_CPUID2
	// does not hide it on the emulating host, and noxsave does not
	// clear it through Linux's dependency table.
	clearcpuid string
}

// emulatorHidden lists the features whose instructions the emulating
// host's instruction emulator cannot run at CPL 0 (DESIGN.md, "KVM on this
// host"), plus the families that depend on them: XSAVE takes AVX, AVX-512,
// AMX, PKU and the XSAVE variants with it. XSAVEERPTR (leaf 0x80000008 EBX
// bit 2) is deliberately absent: without it Linux runs fnclex on AMD.
var emulatorHidden = []hiddenFeature{
	{leafFeatures, 0, rECX, 12, familyXSAVE, ""},          // FMA (VEX)
	{leafFeatures, 0, rECX, 13, familyEmulator, ""},       // CX16: KVM_SET_CPUID2 hides it here
	{leafFeatures, 0, rECX, 17, familyEmulator, "pcid"},   // PCID
	{leafFeatures, 0, rECX, 23, familyEmulator, "popcnt"}, // POPCNT
	{leafFeatures, 0, rECX, 26, familyXSAVE, "xsave"},     // XSAVE (also noxsave)
	{leafFeatures, 0, rECX, 27, familyXSAVE, ""},          // OSXSAVE: follows CR4, never named
	{leafFeatures, 0, rECX, 28, familyXSAVE, ""},          // AVX: cleared with xsave
	{leafFeatures, 0, rECX, 29, familyXSAVE, ""},          // F16C (VEX)
	{leafFeatures, 0, rECX, 30, familyEmulator, "rdrand"}, // RDRAND
	{leafStructExt, 0, rEBX, 0, familyEmulator, "fsgsbase"},
	{leafStructExt, 0, rEBX, 3, familyEmulator, "bmi1"},
	{leafStructExt, 0, rEBX, 5, familyXSAVE, ""}, // AVX2
	{leafStructExt, 0, rEBX, 8, familyEmulator, "bmi2"},
	{leafStructExt, 0, rEBX, 10, familyEmulator, "invpcid"},
	{leafStructExt, 0, rEBX, 16, familyXSAVE, ""}, // AVX512F
	{leafStructExt, 0, rEBX, 17, familyXSAVE, ""}, // AVX512DQ
	{leafStructExt, 0, rEBX, 18, familyEmulator, "rdseed"},
	{leafStructExt, 0, rEBX, 20, familyEmulator, "smap"},
	{leafStructExt, 0, rEBX, 21, familyXSAVE, ""}, // AVX512IFMA
	{leafStructExt, 0, rEBX, 26, familyXSAVE, ""}, // AVX512PF
	{leafStructExt, 0, rEBX, 27, familyXSAVE, ""}, // AVX512ER
	{leafStructExt, 0, rEBX, 28, familyXSAVE, ""}, // AVX512CD
	{leafStructExt, 0, rEBX, 30, familyXSAVE, ""}, // AVX512BW
	{leafStructExt, 0, rEBX, 31, familyXSAVE, ""}, // AVX512VL
	{leafStructExt, 0, rECX, 1, familyXSAVE, ""},  // AVX512VBMI
	{leafStructExt, 0, rECX, 3, familyXSAVE, ""},  // PKU (XSAVE state)
	{leafStructExt, 0, rECX, 4, familyXSAVE, ""},  // OSPKE
	{leafStructExt, 0, rECX, 6, familyXSAVE, ""},  // AVX512_VBMI2
	{leafStructExt, 0, rECX, 9, familyXSAVE, ""},  // VAES
	{leafStructExt, 0, rECX, 10, familyXSAVE, ""}, // VPCLMULQDQ
	{leafStructExt, 0, rECX, 11, familyXSAVE, ""}, // AVX512_VNNI
	{leafStructExt, 0, rECX, 12, familyXSAVE, ""}, // AVX512_BITALG
	{leafStructExt, 0, rECX, 14, familyXSAVE, ""}, // AVX512_VPOPCNTDQ
	{leafStructExt, 0, rECX, 22, familyEmulator, "rdpid"},
	{leafStructExt, 0, rEDX, 2, familyXSAVE, ""},       // AVX512_4VNNIW
	{leafStructExt, 0, rEDX, 3, familyXSAVE, ""},       // AVX512_4FMAPS
	{leafStructExt, 0, rEDX, 8, familyXSAVE, ""},       // AVX512_VP2INTERSECT
	{leafStructExt, 0, rEDX, 22, familyXSAVE, ""},      // AMX_BF16
	{leafStructExt, 0, rEDX, 23, familyXSAVE, ""},      // AVX512_FP16
	{leafStructExt, 0, rEDX, 24, familyXSAVE, ""},      // AMX_TILE
	{leafStructExt, 0, rEDX, 25, familyXSAVE, ""},      // AMX_INT8
	{leafStructExt, 1, rEAX, 4, familyXSAVE, ""},       // AVX_VNNI
	{leafStructExt, 1, rEAX, 5, familyXSAVE, ""},       // AVX512_BF16
	{leafStructExt, 1, rEAX, 23, familyXSAVE, ""},      // AVX_IFMA
	{leafExtFeatures, 0, rECX, 11, familyXSAVE, ""},    // XOP
	{leafExtFeatures, 0, rECX, 16, familyXSAVE, ""},    // FMA4
	{leafExtFeatures, 0, rECX, 21, familyEmulator, ""}, // TBM (BMI family)
}

func reg(e *kvm.CPUIDEntry2, r cpuidReg) *uint32 {
	switch r {
	case rEAX:
		return &e.EAX
	case rEBX:
		return &e.EBX
	case rECX:
		return &e.ECX
	default:
		return &e.EDX
	}
}

// CPUID bits ShapeCPUID reads or sets.
const (
	ecxTopoExt          = 1 << 22 // leaf 0x80000001 ECX: AMD topology extensions
	leaf1ECXHypervisor  = 1 << 31
	leaf1ECXTSCDeadline = 1 << 24
	leaf1EDXHTT         = 1 << 28
)

// kvmSignature is "KVMKVMKVM\0\0\0" in EBX, rECX, EDX.
var kvmSignature = [3]uint32{0x4B4D_564B, 0x564B_4D56, 0x0000_004D}

// ShapeCPUID builds one vCPU's CPUID table from KVM_GET_SUPPORTED_CPUID:
// its APIC ID (leaf 1 EBX[31:24], the x2APIC ID in leaves 0xB/0x1F, AMD's
// 0x8000001E), a topology of one socket with t.CPUs single-thread cores
// (leaves 1, 4, 0xB, 0x1F, 0x80000008, 0x8000001D, 0x8000001E), the
// hypervisor bit, KVM's signature leaf and the supported paravirt
// features, and no architectural PMU (leaf 0xA zero). x2APIC stays as KVM
// supports it; TSC-deadline is kept when supported and added when
// p.TSCDeadline says the in-kernel LAPIC has it. With p.Emulating it also
// removes emulatorHidden and the XSAVE state leaf; with p.BrokenXSETBV the
// XSAVE family of that table and the XSAVE state leaf. The supported slice is
// not modified; the result is sorted by leaf and subleaf.
func ShapeCPUID(supported []kvm.CPUIDEntry2, t Topology, p HostProfile) []kvm.CPUIDEntry2 {
	cpus := max(t.CPUs, 1)
	apicID := uint32(t.APICID)
	// Bits of APIC ID that number the cores: the x2APIC shift to the
	// package level.
	coreBits := uint32(bits.Len(uint(cpus - 1)))
	maxBasic := uint32(0)
	out := make([]kvm.CPUIDEntry2, 0, len(supported)+4)
	haveV2, haveKVMSig, haveKVMFeat, haveAMDTopo := false, false, false, false
	maxExt, topoExt := uint32(0), false
	for _, e := range supported {
		switch e.Function {
		case leafTopology:
			continue // regenerated below
		case leafTopologyV2:
			haveV2 = true
			continue
		case leafVendor:
			maxBasic = e.EAX
		case leafFeatures:
			e.EBX = e.EBX&0x0000_FFFF | min(uint32(cpus), 0xFF)<<16 | apicID<<24
			if cpus > 1 {
				e.EDX |= leaf1EDXHTT
			} else {
				e.EDX &^= leaf1EDXHTT
			}
			e.ECX |= leaf1ECXHypervisor
			if p.TSCDeadline {
				e.ECX |= leaf1ECXTSCDeadline
			}
		case leafCacheParams:
			if e.EAX&0x1F != 0 {
				e.EAX = e.EAX&0x0000_3FFF | cacheSharing(e.EAX, cpus)<<14 | min(uint32(cpus-1), 0x3F)<<26
			}
		case leafAMDCache:
			if e.EAX&0x1F != 0 {
				e.EAX = e.EAX&^(0xFFF<<14) | cacheSharing(e.EAX, cpus)<<14
			}
		case leafPMU:
			e.EAX, e.EBX, e.ECX, e.EDX = 0, 0, 0, 0
		case leafAddrSizes:
			// NC: cores in the package minus one; ApicIdCoreIdSize.
			e.ECX = e.ECX&^0xF0FF | coreBits<<12 | uint32(cpus-1)&0xFF
		case leafExtMax:
			maxExt = e.EAX
		case leafExtFeatures:
			topoExt = e.ECX&ecxTopoExt != 0
		case leafAMDTopology:
			haveAMDTopo = true
			e.EAX = apicID         // extended APIC ID
			e.EBX = apicID & 0xFF  // compute unit (core) ID; threads per unit - 1 = 0
			e.ECX = e.ECX &^ 0x7FF // node 0, one node per package
		case leafKVMSig:
			haveKVMSig = true
			e.EAX = max(e.EAX, leafKVMFeatures)
			e.EBX, e.ECX, e.EDX = kvmSignature[0], kvmSignature[1], kvmSignature[2]
		case leafKVMFeatures:
			haveKVMFeat = true
		}
		noXSAVE := p.Emulating || p.BrokenXSETBV
		if noXSAVE && e.Function == leafXSAVE {
			e.EAX, e.EBX, e.ECX, e.EDX = 0, 0, 0, 0
		}
		for _, h := range emulatorHidden {
			hide := p.Emulating || noXSAVE && h.family == familyXSAVE
			if hide && h.leaf == e.Function && h.subleaf == e.Index {
				*reg(&e, h.reg) &^= 1 << h.bit
			}
		}
		out = append(out, e)
	}
	if maxBasic >= leafTopology {
		out = append(out, x2APICTopology(leafTopology, apicID, cpus, coreBits)...)
	}
	if haveV2 && maxBasic >= leafTopologyV2 {
		out = append(out, x2APICTopology(leafTopologyV2, apicID, cpus, coreBits)...)
	}
	if topoExt && !haveAMDTopo && maxExt >= leafAMDTopology {
		// Linux reads it whenever TOPOEXT is set (node and LLC IDs);
		// an absent entry would read as zeros, node 0 of one, which is
		// right, but the extended APIC ID must be this vCPU's.
		out = append(out, kvm.CPUIDEntry2{Function: leafAMDTopology, EAX: apicID, EBX: apicID & 0xFF})
	}
	if !haveKVMSig {
		out = append(out, kvm.CPUIDEntry2{Function: leafKVMSig, EAX: leafKVMFeatures,
			EBX: kvmSignature[0], ECX: kvmSignature[1], EDX: kvmSignature[2]})
	}
	if !haveKVMFeat {
		// No paravirt features: the guest still recognises KVM, and
		// reads a zero feature leaf rather than whatever KVM answers
		// for an absent one.
		out = append(out, kvm.CPUIDEntry2{Function: leafKVMFeatures})
	}
	slices.SortStableFunc(out, func(a, b kvm.CPUIDEntry2) int {
		return cmp.Or(cmp.Compare(a.Function, b.Function), cmp.Compare(a.Index, b.Index))
	})
	return out
}

// cacheSharing is the "logical processors sharing this cache, minus one"
// field for a leaf 4 / 0x8000001D entry: L1 and L2 belong to one core (one
// thread), the last level to the whole package.
func cacheSharing(eax uint32, cpus int) uint32 {
	level := eax >> 5 & 0x7
	if level >= 3 {
		return uint32(cpus-1) & 0xFFF
	}
	return 0
}

// x2APICTopology is leaf 0xB or 0x1F for one vCPU: an SMT level of one
// thread, a core level of cpus cores, then the terminating invalid level.
// EDX is the x2APIC ID at every subleaf.
func x2APICTopology(leaf, apicID uint32, cpus int, coreBits uint32) []kvm.CPUIDEntry2 {
	const (
		levelInvalid = 0
		levelSMT     = 1
		levelCore    = 2
	)
	f := uint32(kvm.CPUIDFlagSignificantIndex)
	return []kvm.CPUIDEntry2{
		{Function: leaf, Index: 0, Flags: f, EAX: 0, EBX: 1, ECX: levelSMT << 8 /* level number 0 */, EDX: apicID},
		{Function: leaf, Index: 1, Flags: f, EAX: coreBits, EBX: uint32(cpus), ECX: levelCore<<8 | 1, EDX: apicID},
		{Function: leaf, Index: 2, Flags: f, EAX: 0, EBX: 0, ECX: levelInvalid<<8 | 2, EDX: apicID},
	}
}
