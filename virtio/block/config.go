package block

import "encoding/binary"

// Device feature bits (virtio 1.2 5.2.3).
const (
	FeatureSizeMax     uint64 = 1 << 1
	FeatureSegMax      uint64 = 1 << 2
	FeatureRO          uint64 = 1 << 5
	FeatureBlkSize     uint64 = 1 << 6
	FeatureFlush       uint64 = 1 << 9
	FeatureTopology    uint64 = 1 << 10
	FeatureDiscard     uint64 = 1 << 13
	FeatureWriteZeroes uint64 = 1 << 14
)

// Offsets in struct virtio_blk_config (virtio 1.2 5.2.4).
const (
	cfgCapacity          = 0
	cfgSizeMax           = 8
	cfgSegMax            = 12
	cfgBlkSize           = 20
	cfgPhysBlockExp      = 24
	cfgAlignmentOffset   = 25
	cfgMinIOSize         = 26
	cfgOptIOSize         = 28
	cfgWriteback         = 32
	cfgNumQueues         = 34
	cfgMaxDiscardSectors = 36
	cfgMaxDiscardSeg     = 40
	cfgDiscardAlign      = 44
	cfgMaxZeroesSectors  = 48
	cfgMaxZeroesSeg      = 52
	cfgZeroesMayUnmap    = 56
	// ConfigSize is the length of the configuration space.
	ConfigSize = 60
)

// Limits the device offers. A discard or write-zeroes segment may cover up to
// 2 GiB (fallocate does it in one call); a request carries up to 64 of them,
// bounding the work one chain can cause. Discards are aligned to 4 KiB, the
// granularity at which host filesystems free blocks.
const (
	maxDiscardSectors = 1 << 22
	maxDiscardSegs    = 64
	discardAlignment  = 8
	maxZeroesSectors  = 1 << 22
	maxZeroesSegs     = 64
	// physicalBlockExp says the disk's physical blocks are 2^3 logical
	// (512-byte) blocks: 4 KiB, the host page and filesystem block, so the
	// guest aligns its I/O to it.
	physicalBlockExp = 3
)

// configSpace builds the configuration space for a disk of capacity sectors.
func configSpace(capacity uint64, segMax uint32) [ConfigSize]byte {
	var c [ConfigSize]byte
	le := binary.LittleEndian
	le.PutUint64(c[cfgCapacity:], capacity)
	le.PutUint32(c[cfgSegMax:], segMax)
	le.PutUint32(c[cfgBlkSize:], SectorSize)
	c[cfgPhysBlockExp] = physicalBlockExp
	le.PutUint16(c[cfgMinIOSize:], 1<<physicalBlockExp)
	// Writeback cache (the host page cache): the guest must flush.
	c[cfgWriteback] = 1
	le.PutUint16(c[cfgNumQueues:], 1)
	le.PutUint32(c[cfgMaxDiscardSectors:], maxDiscardSectors)
	le.PutUint32(c[cfgMaxDiscardSeg:], maxDiscardSegs)
	le.PutUint32(c[cfgDiscardAlign:], discardAlignment)
	le.PutUint32(c[cfgMaxZeroesSectors:], maxZeroesSectors)
	le.PutUint32(c[cfgMaxZeroesSeg:], maxZeroesSegs)
	c[cfgZeroesMayUnmap] = 1
	return c
}
