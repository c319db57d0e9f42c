package kvm

import "encoding/binary"

// UserspaceMemoryRegion mirrors struct kvm_userspace_memory_region
// (KVM_SET_USER_MEMORY_REGION). MemorySize 0 deletes the slot.
type UserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// Memory region flags (KVM_MEM_*).
const (
	MemLogDirtyPages = 1 << 0
	MemReadonly      = 1 << 1
)

// IRQ chip ids for IRQChip.ChipID and IRQRoutingIRQChip.IRQChip.
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

// IOAPICNumPins is KVM_IOAPIC_NUM_PINS.
const IOAPICNumPins = 24

// PICState mirrors struct kvm_pic_state (one 8259).
type PICState struct {
	LastIRR                uint8
	IRR                    uint8
	IMR                    uint8
	ISR                    uint8
	PriorityAdd            uint8
	IRQBase                uint8
	ReadRegSelect          uint8
	Poll                   uint8
	SpecialMask            uint8
	InitState              uint8
	AutoEOI                uint8
	RotateOnAutoEOI        uint8
	SpecialFullyNestedMode uint8
	Init4                  uint8
	ELCR                   uint8
	ELCRMask               uint8
}

// IOAPICState mirrors struct kvm_ioapic_state. Each RedirTbl entry is the
// raw 64-bit redirection entry (vector in bits 0-7, mask bit 16, dest 56-63).
type IOAPICState struct {
	BaseAddress uint64
	IORegSel    uint32
	ID          uint32
	IRR         uint32
	Pad         uint32
	RedirTbl    [IOAPICNumPins]uint64
}

// IRQChip mirrors struct kvm_irqchip (KVM_GET_IRQCHIP / KVM_SET_IRQCHIP).
// Chip is the kernel's 512-byte union; PIC/IOAPIC and their setters
// interpret it according to ChipID.
type IRQChip struct {
	ChipID uint32
	Pad    uint32
	Chip   [512]uint8
}

// PIC decodes Chip as a kvm_pic_state (ChipID IRQChipPICMaster/Slave).
func (c *IRQChip) PIC() PICState {
	b := c.Chip[:]
	return PICState{b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]}
}

// SetPIC encodes p into Chip.
func (c *IRQChip) SetPIC(p PICState) {
	copy(c.Chip[:16], []uint8{p.LastIRR, p.IRR, p.IMR, p.ISR, p.PriorityAdd, p.IRQBase,
		p.ReadRegSelect, p.Poll, p.SpecialMask, p.InitState, p.AutoEOI, p.RotateOnAutoEOI,
		p.SpecialFullyNestedMode, p.Init4, p.ELCR, p.ELCRMask})
}

// IOAPIC decodes Chip as a kvm_ioapic_state (ChipID IRQChipIOAPIC).
func (c *IRQChip) IOAPIC() IOAPICState {
	le := binary.LittleEndian
	b := c.Chip[:]
	s := IOAPICState{
		BaseAddress: le.Uint64(b[0:]),
		IORegSel:    le.Uint32(b[8:]),
		ID:          le.Uint32(b[12:]),
		IRR:         le.Uint32(b[16:]),
		Pad:         le.Uint32(b[20:]),
	}
	for i := range s.RedirTbl {
		s.RedirTbl[i] = le.Uint64(b[24+8*i:])
	}
	return s
}

// SetIOAPIC encodes s into Chip.
func (c *IRQChip) SetIOAPIC(s IOAPICState) {
	le := binary.LittleEndian
	b := c.Chip[:]
	le.PutUint64(b[0:], s.BaseAddress)
	le.PutUint32(b[8:], s.IORegSel)
	le.PutUint32(b[12:], s.ID)
	le.PutUint32(b[16:], s.IRR)
	le.PutUint32(b[20:], s.Pad)
	for i, e := range s.RedirTbl {
		le.PutUint64(b[24+8*i:], e)
	}
}

// PITConfig mirrors struct kvm_pit_config (KVM_CREATE_PIT2).
type PITConfig struct {
	Flags uint32
	Pad   [15]uint32
}

// PITSpeakerDummy (KVM_PIT_SPEAKER_DUMMY) makes KVM claim port 0x61 so the
// guest's PC-speaker probing does not exit to userspace.
const PITSpeakerDummy = 1

// PITChannelState mirrors struct kvm_pit_channel_state.
type PITChannelState struct {
	Count         uint32
	LatchedCount  uint16
	CountLatched  uint8
	StatusLatched uint8
	Status        uint8
	ReadState     uint8
	WriteState    uint8
	WriteLatch    uint8
	RWMode        uint8
	Mode          uint8
	BCD           uint8
	Gate          uint8
	CountLoadTime int64
}

// PITState2 mirrors struct kvm_pit_state2 (KVM_GET_PIT2 / KVM_SET_PIT2).
type PITState2 struct {
	Channels [3]PITChannelState
	Flags    uint32
	Reserved [9]uint32
}

// PITState2 flags (KVM_PIT_FLAGS_*).
const (
	PITFlagsHPETLegacy    = 0x1
	PITFlagsSpeakerDataOn = 0x2
)

// ClockData mirrors struct kvm_clock_data (KVM_GET_CLOCK / KVM_SET_CLOCK).
type ClockData struct {
	Clock    uint64
	Flags    uint32
	Pad0     uint32
	Realtime uint64
	HostTSC  uint64
	Pad      [4]uint32
}

// ClockData flags (KVM_CLOCK_*).
const (
	ClockTSCStable = 2
	ClockRealtime  = 1 << 2
	ClockHostTSC   = 1 << 3
)

// IOEventFD mirrors struct kvm_ioeventfd (KVM_IOEVENTFD): a guest write to
// Addr (an I/O port when IOEventFDFlagPIO is set, else MMIO) signals FD
// inside the kernel instead of exiting to userspace.
type IOEventFD struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	Pad       [36]uint8
}

// IOEventFD flags (KVM_IOEVENTFD_FLAG_*).
const (
	IOEventFDFlagDatamatch = 1 << 0
	IOEventFDFlagPIO       = 1 << 1
	IOEventFDFlagDeassign  = 1 << 2
)

// IRQFD mirrors struct kvm_irqfd (KVM_IRQFD): a write to FD raises GSI.
type IRQFD struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	Pad        [16]uint8
}

// IRQFD flags (KVM_IRQFD_FLAG_*).
const (
	IRQFDFlagDeassign = 1 << 0
	IRQFDFlagResample = 1 << 1
)

// IRQ routing entry kinds (KVM_IRQ_ROUTING_*).
const (
	IRQRoutingTypeIRQChip = 1
	IRQRoutingTypeMSI     = 2
)

// IRQRoutingEntry mirrors struct kvm_irq_routing_entry. U is the kernel's
// 32-byte union; build entries with NewIRQRoutingIRQChip/NewIRQRoutingMSI
// and read them back with IRQChip/MSI.
type IRQRoutingEntry struct {
	GSI   uint32
	Type  uint32
	Flags uint32
	Pad   uint32
	U     [8]uint32
}

// IRQRoutingIRQChip mirrors struct kvm_irq_routing_irqchip.
type IRQRoutingIRQChip struct {
	IRQChip uint32
	Pin     uint32
}

// IRQRoutingMSI mirrors struct kvm_irq_routing_msi. DevID is only read by
// KVM when the entry's Flags carry MSIValidDevID.
type IRQRoutingMSI struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	DevID     uint32
}

// NewIRQRoutingIRQChip routes gsi to pin of an in-kernel irqchip.
func NewIRQRoutingIRQChip(gsi uint32, r IRQRoutingIRQChip) IRQRoutingEntry {
	e := IRQRoutingEntry{GSI: gsi, Type: IRQRoutingTypeIRQChip}
	e.U[0], e.U[1] = r.IRQChip, r.Pin
	return e
}

// NewIRQRoutingMSI routes gsi to an MSI message.
func NewIRQRoutingMSI(gsi uint32, m IRQRoutingMSI) IRQRoutingEntry {
	e := IRQRoutingEntry{GSI: gsi, Type: IRQRoutingTypeMSI}
	e.U[0], e.U[1], e.U[2], e.U[3] = m.AddressLo, m.AddressHi, m.Data, m.DevID
	return e
}

// IRQChip returns the irqchip payload, or false if the entry is another kind.
func (e *IRQRoutingEntry) IRQChip() (IRQRoutingIRQChip, bool) {
	if e.Type != IRQRoutingTypeIRQChip {
		return IRQRoutingIRQChip{}, false
	}
	return IRQRoutingIRQChip{IRQChip: e.U[0], Pin: e.U[1]}, true
}

// MSI returns the MSI payload, or false if the entry is another kind.
func (e *IRQRoutingEntry) MSI() (IRQRoutingMSI, bool) {
	if e.Type != IRQRoutingTypeMSI {
		return IRQRoutingMSI{}, false
	}
	return IRQRoutingMSI{AddressLo: e.U[0], AddressHi: e.U[1], Data: e.U[2], DevID: e.U[3]}, true
}

// MSI mirrors struct kvm_msi (KVM_SIGNAL_MSI).
type MSI struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32
	DevID     uint32
	Pad       [12]uint8
}

// MSIValidDevID (KVM_MSI_VALID_DEVID) marks DevID as meaningful.
const MSIValidDevID = 1 << 0

// EnableCap mirrors struct kvm_enable_cap (KVM_ENABLE_CAP).
type EnableCap struct {
	Cap   Cap
	Flags uint32
	Args  [4]uint64
	Pad   [64]uint8
}

// irqLevel mirrors struct kvm_irq_level (KVM_IRQ_LINE).
type irqLevel struct {
	IRQ   uint32
	Level uint32
}
