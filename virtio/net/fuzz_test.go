package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"kvmstack/virtio"
	"kvmstack/vmm/memory"
)

var (
	fuzzMemOnce sync.Once
	fuzzMem     *memory.Memory
	fuzzMemErr  error
)

// FuzzParseTx feeds transmit chains built from the input to parseTx: byte 0
// picks the negotiated features, byte 1 the number of descriptors, then
// three bytes per descriptor (length, flags); the rest fills the buffers.
// A parsed packet must be exactly the chain's bytes after the header, and
// every rejection must be one of the two kinds the device acts on.
func FuzzParseTx(f *testing.F) {
	seed := func(feat byte, descs [][3]byte, payload []byte) []byte {
		b := []byte{feat, byte(len(descs))}
		for _, d := range descs {
			b = append(b, d[:]...)
		}
		return append(b, payload...)
	}
	f.Add(seed(0xff, [][3]byte{{12, 0, 0}, {60, 0, 0}}, make([]byte, 72)))
	f.Add(seed(0xff, [][3]byte{{100, 0, 0}}, append(hdr(1, 0, 0, 34, 16), frame(88, 1)...)))
	f.Add(seed(0x01, [][3]byte{{5, 0, 0}, {200, 0, 0}, {0, 0, 0}}, append(hdr(1, gsoTCPv4, 1448, 34, 16), frame(193, 2)...)))
	f.Add(seed(0xff, [][3]byte{{12, 0, 0}, {0xff, 0xff, 0}}, append(hdr(1, gsoTCPv6, 1448, 54, 16), frame(200, 3)...)))
	f.Add(seed(0xff, [][3]byte{{12, 0, 0}, {60, 0, 1}}, nil))
	f.Add(seed(0xff, [][3]byte{{11, 0, 0}}, nil))
	f.Add(seed(0x00, [][3]byte{{12, 0, 0}, {13, 0, 0}}, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzMemOnce.Do(func() { fuzzMem, fuzzMemErr = memory.New(16 << 20) })
		if fuzzMemErr != nil {
			t.Fatal(fuzzMemErr)
		}
		if len(data) < 2 {
			return
		}
		// Features: the low bits select among the transmit features.
		var features uint64
		for i, fb := range []uint64{FeatureCsum, FeatureHostTSO4, FeatureHostTSO6, FeatureHostECN} {
			if data[0]&(1<<i) != 0 {
				features |= fb
			}
		}
		n := int(data[1] % 9)
		data = data[2:]
		if len(data) < 3*n {
			return
		}
		c := &virtio.Chain{}
		addr := memory.GuestAddr(0x1000)
		var readable []byte
		payload := data[3*n:]
		for i := range n {
			l := uint32(binary.LittleEndian.Uint16(data[3*i:])) * uint32(1+data[3*i+2]>>4)
			write := data[3*i+2]&1 != 0
			buf := make([]byte, l)
			for j := range buf {
				if len(payload) > 0 {
					buf[j] = payload[(int(addr)+j)%len(payload)]
				}
			}
			if err := fuzzMem.WriteAt(buf, addr); err != nil {
				t.Fatal(err)
			}
			c.Descs = append(c.Descs, virtio.Desc{Addr: addr, Len: l, Write: write})
			if !write {
				readable = append(readable, buf...)
			}
			addr += memory.GuestAddr(l)
		}
		var p txPacket
		err := parseTx(fuzzMem, c, features, &p)
		if err != nil {
			if !errors.Is(err, errMalformed) && !errors.Is(err, errBadHeader) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		got := bytes.Join(p.bufs, nil)
		if len(got) != p.frameLen || p.frameLen < minFrame || p.frameLen > maxFrame {
			t.Fatalf("frame of %d bytes, frameLen %d", len(got), p.frameLen)
		}
		if len(readable) != HdrLen+len(got) || !bytes.Equal(p.hdr[:], readable[:HdrLen]) || !bytes.Equal(got, readable[HdrLen:]) {
			t.Fatalf("packet is not the chain's bytes: %d readable, %d parsed", len(readable), len(got))
		}
		if err := checkTxHeader(p.hdr[:], p.frameLen, features); err != nil {
			t.Fatalf("accepted a header the check rejects: %v", err)
		}
	})
}
