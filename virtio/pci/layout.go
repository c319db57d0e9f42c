package pci

import (
	"kvmstack/virtio"
)

// BAR 0 layout. Every structure sits in its own page, so a guest mapping
// one (or KVM's ioeventfd on the notify page) never covers another.
const (
	bar             = 0
	barSize         = 0x8000
	commonOffset    = 0x0000
	commonSize      = 0x40
	isrOffset       = 0x1000
	isrSize         = 4
	deviceOffset    = 0x2000
	deviceSize      = 0x1000
	notifyOffset    = 0x3000
	notifyMult      = 4 // notify_off_multiplier: one 4-byte address per queue
	msixTableOffset = 0x4000
	msixPBAOffset   = 0x5000
	regionSize      = 0x1000

	// MaxQueues bounds a device's queue count: the notify page and the
	// MSI-X table (one vector per queue plus one) each hold one page.
	MaxQueues = regionSize/msixEntry - 1
	msixEntry = 16
)

// PCI identity of modern virtio devices (virtio 1.2 4.1.2).
const (
	vendorVirtio     = 0x1af4
	deviceIDBase     = 0x1040
	subsystemID      = 0x40
	revisionModern   = 1
	noVector         = 0xFFFF
	capCommonCfg     = 1
	capNotifyCfg     = 2
	capISRCfg        = 3
	capDeviceCfg     = 4
	virtioCapBodyLen = 14 // after cap_vndr and cap_next
)

// Common configuration structure fields (struct virtio_pci_common_cfg).
const (
	ccDeviceFeatureSelect = 0x00
	ccDeviceFeature       = 0x04
	ccDriverFeatureSelect = 0x08
	ccDriverFeature       = 0x0C
	ccConfigMSIXVector    = 0x10
	ccNumQueues           = 0x12
	ccDeviceStatus        = 0x14
	ccConfigGeneration    = 0x15
	ccQueueSelect         = 0x16
	ccQueueSize           = 0x18
	ccQueueMSIXVector     = 0x1A
	ccQueueEnable         = 0x1C
	ccQueueNotifyOff      = 0x1E
	ccQueueDesc           = 0x20
	ccQueueDriver         = 0x28
	ccQueueDevice         = 0x30
	ccQueueNotifyData     = 0x38
	ccQueueReset          = 0x3A
)

// ISR status bits.
const (
	isrQueue  = 1
	isrConfig = 2
)

// transportFeatures are offered for every device on top of its own.
const transportFeatures = virtio.FeatureVersion1 | virtio.FeatureIndirectDesc | virtio.FeatureEventIdx

// classOf is the PCI class code for a device type.
func classOf(t virtio.DeviceType) uint32 {
	switch t {
	case virtio.DeviceNet:
		return 0x020000 // network controller, ethernet
	case virtio.DeviceBlock:
		return 0x010000 // mass storage, SCSI (as QEMU reports virtio-blk)
	}
	return 0xFF0000 // unassigned class
}
