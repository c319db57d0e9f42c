package pci

import (
	"testing"

	"kvmstack/virtio"
	"kvmstack/virtio/rng"
)

// FuzzTransport replays arbitrary driver writes to BAR 0 (common config,
// notify, ISR, MSI-X table) and to configuration space against a transport
// with an rng device behind it. Nothing may panic or deadlock, and
// FEATURES_OK may only be set with VERSION_1 negotiated.
func FuzzTransport(f *testing.F) {
	// A valid bring-up: ACK, DRIVER, features (select 1: VERSION_1),
	// FEATURES_OK, queue 0 setup, DRIVER_OK, kick.
	f.Add([]byte{
		0, ccDeviceStatus, 1, 1, 0, ccDeviceStatus, 1, 3,
		0, ccDriverFeatureSelect, 4, 1, 0, 0, 0, 0, ccDriverFeature, 4, 1, 0, 0, 0,
		0, ccDeviceStatus, 1, 11, 0, ccQueueSize, 2, 16, 0,
		0, ccQueueDesc, 8, 0, 0, 1, 0, 0, 0, 0, 0, 0, ccQueueDriver, 8, 0, 0x10, 1, 0, 0, 0, 0, 0,
		0, ccQueueDevice, 8, 0, 0x20, 1, 0, 0, 0, 0, 0, 0, ccQueueEnable, 2, 1, 0,
		0, ccDeviceStatus, 1, 15, 1, 0, 2, 0, 0,
	})
	f.Add([]byte{0, ccDeviceStatus, 1, 0xFF, 2, 0, 4, 0, 0, 0xE0, 0xFE, 3, 0x48, 2, 0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, ops []byte) {
		h := newHarness(t, rng.New(), len(ops) > 0 && ops[0]&0x80 != 0)
		for len(ops) >= 3 {
			kind, off, n := ops[0]%4, uint64(ops[1]), int(ops[2]%8)+1
			ops = ops[3:]
			if n > len(ops) {
				n = len(ops)
			}
			var v uint64
			for i := n - 1; i >= 0; i-- {
				v = v<<8 | uint64(ops[i])
			}
			ops = ops[n:]
			switch kind {
			case 0:
				h.write(commonOffset+off%commonSize, n, v)
			case 1:
				h.write(notifyOffset+off%8, n, v)
			case 2:
				h.write(msixTableOffset+off%32, n, v)
				h.read(isrOffset, 1)
			case 3:
				b := make([]byte, n)
				for i := range b {
					b[i] = byte(v >> (8 * i))
				}
				h.cfgWrite(off, b)
			}
			status := uint8(h.read(commonOffset+ccDeviceStatus, 1))
			if status&virtio.StatusFeaturesOK != 0 {
				h.write(commonOffset+ccDriverFeatureSelect, 4, 1)
				if h.read(commonOffset+ccDriverFeature, 4)&1 == 0 {
					t.Fatalf("FEATURES_OK without VERSION_1")
				}
			}
		}
	})
}
