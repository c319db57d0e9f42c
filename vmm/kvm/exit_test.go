package kvm

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"unsafe"
)

// page returns a fresh run mapping the size KVM typically reports.
func page() []byte { return make([]byte, RunPageSize) }

func TestDecodeExitTable(t *testing.T) {
	insn, err := EmulationFailureData([]byte{0xcc})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		exit Exit
	}{
		{"io out byte", IOExit{Port: 0x3f8, Size: 1, Count: 1, Data: []byte{'A'}}},
		{"io in dword", IOExit{Port: 0xcfc, Size: 4, In: true, Count: 1, Data: []byte{1, 2, 3, 4}}},
		{"io rep outsw", IOExit{Port: 0x1f0, Size: 2, Count: 3, Data: []byte{1, 2, 3, 4, 5, 6}}},
		{"mmio write", MMIOExit{Addr: 0xfebf_f000, Data: []byte{1, 2, 3, 4}, Len: 4, Write: true}},
		{"mmio read qword", MMIOExit{Addr: 0xd000_0000, Data: make([]byte, 8), Len: 8}},
		{"hlt", HLTExit{}},
		{"shutdown", ShutdownExit{}},
		{"irq window", IRQWindowOpenExit{}},
		{"intr", IntrExit{}},
		{"emulation failure", InternalErrorExit{Suberror: InternalErrorEmulation, Data: insn}},
		{"delivery ev", InternalErrorExit{Suberror: InternalErrorDeliveryEv, Data: []uint64{0x80000b0e, 0x31, 0, 0xfff0}}},
		{"system event reset", SystemEventExit{Type: SystemEventReset, Flags: 0, Data: []uint64{}}},
		{"system event with data", SystemEventExit{Type: SystemEventCrash, Flags: 7, Data: []uint64{7, 9}}},
		{"fail entry", FailEntryExit{Reason: 0x21, CPU: 3}},
		{"exception", ExceptionExit{Exception: 6, ErrorCode: 0}},
		{"unknown hw", UnknownExit{Reason: ExitUnknown, HardwareReason: 0x30}},
		{"unhandled reason", UnknownExit{Reason: ExitX86RDMSR}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := page()
			if err := EncodeExit(run, tc.exit); err != nil {
				t.Fatalf("EncodeExit: %v", err)
			}
			got, err := DecodeExit(run)
			if err != nil {
				t.Fatalf("DecodeExit: %v", err)
			}
			if !reflect.DeepEqual(got, tc.exit) {
				t.Fatalf("DecodeExit = %#v, want %#v", got, tc.exit)
			}
			if got.Kind() != tc.exit.Kind() {
				t.Fatalf("Kind = %v, want %v", got.Kind(), tc.exit.Kind())
			}
		})
	}
}

// TestDecodeExitRawBytes builds pages byte by byte from the kernel's
// documented layout, so a shared mistake in EncodeExit and DecodeExit
// cannot hide.
func TestDecodeExitRawBytes(t *testing.T) {
	le := binary.LittleEndian
	run := page()
	le.PutUint32(run[8:], 2) // exit_reason = KVM_EXIT_IO
	run[32] = 1              // direction OUT
	run[33] = 2              // size
	le.PutUint16(run[34:], 0x70)
	le.PutUint32(run[36:], 1)
	le.PutUint64(run[40:], 0x1000)
	run[0x1000], run[0x1001] = 0x34, 0x12
	e, err := DecodeExit(run)
	if err != nil {
		t.Fatal(err)
	}
	io, ok := e.(IOExit)
	if !ok || io.Port != 0x70 || io.Size != 2 || io.In || io.Count != 1 || le.Uint16(io.Data) != 0x1234 {
		t.Fatalf("got %#v", e)
	}
	// An IN handler writes through Data into the page KVM reads back.
	io.Data[0] = 0xaa
	if run[0x1000] != 0xaa {
		t.Fatal("IOExit.Data does not alias the run page")
	}

	run = page()
	le.PutUint32(run[8:], 6) // KVM_EXIT_MMIO
	le.PutUint64(run[32:], 0xfee0_0300)
	copy(run[40:], []byte{9, 8, 7, 6})
	le.PutUint32(run[48:], 4)
	run[52] = 1
	e, err = DecodeExit(run)
	if err != nil {
		t.Fatal(err)
	}
	want := MMIOExit{Addr: 0xfee0_0300, Data: []byte{9, 8, 7, 6}, Len: 4, Write: true}
	if !reflect.DeepEqual(e, want) {
		t.Fatalf("got %#v, want %#v", e, want)
	}

	// The emulation failure DESIGN.md describes for int3 on kvm_pvm:
	// data[0]=1 (bytes valid), then insn_size=1 and 0xcc.
	run = page()
	le.PutUint32(run[8:], 17) // KVM_EXIT_INTERNAL_ERROR
	le.PutUint32(run[32:], 1) // suberror EMULATION
	le.PutUint32(run[36:], 3) // ndata
	le.PutUint64(run[40:], 1) // flags
	run[48] = 1               // insn_size
	run[49] = 0xcc
	e, err = DecodeExit(run)
	if err != nil {
		t.Fatal(err)
	}
	ie := e.(InternalErrorExit)
	b, ok := ie.InstructionBytes()
	if !ok || len(b) != 1 || b[0] != 0xcc {
		t.Fatalf("InstructionBytes = %x, %v", b, ok)
	}
}

func TestDecodeExitRejects(t *testing.T) {
	le := binary.LittleEndian
	tests := []struct {
		name  string
		setup func(run []byte) []byte
	}{
		{"short page", func(run []byte) []byte { return run[:runMinSize-1] }},
		{"io data past end", func(run []byte) []byte {
			le.PutUint32(run[8:], 2)
			run[33], run[32] = 4, 1
			le.PutUint32(run[36:], 2)
			le.PutUint64(run[40:], uint64(len(run)-4))
			return run
		}},
		{"io offset wraps", func(run []byte) []byte {
			le.PutUint32(run[8:], 2)
			run[33], run[32] = 1, 1
			le.PutUint32(run[36:], 1)
			le.PutUint64(run[40:], ^uint64(0))
			return run
		}},
		{"io huge count", func(run []byte) []byte {
			le.PutUint32(run[8:], 2)
			run[33], run[32] = 4, 0
			le.PutUint32(run[36:], 0xffffffff)
			le.PutUint64(run[40:], 4096)
			return run
		}},
		{"io size 3", func(run []byte) []byte {
			le.PutUint32(run[8:], 2)
			run[33], run[32] = 3, 1
			le.PutUint32(run[36:], 1)
			le.PutUint64(run[40:], 4096)
			return run
		}},
		{"io count 0", func(run []byte) []byte {
			le.PutUint32(run[8:], 2)
			run[33], run[32] = 1, 1
			le.PutUint64(run[40:], 4096)
			return run
		}},
		{"io direction 2", func(run []byte) []byte {
			le.PutUint32(run[8:], 2)
			run[33], run[32] = 1, 2
			le.PutUint32(run[36:], 1)
			le.PutUint64(run[40:], 4096)
			return run
		}},
		{"mmio len 9", func(run []byte) []byte {
			le.PutUint32(run[8:], 6)
			le.PutUint32(run[48:], 9)
			return run
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeExit(tc.setup(page()))
			if !errors.Is(err, ErrBadRun) {
				t.Fatalf("err = %v, want ErrBadRun", err)
			}
		})
	}
}

func TestDecodeExitClampsNData(t *testing.T) {
	run := page()
	le := binary.LittleEndian
	le.PutUint32(run[8:], uint32(ExitInternalError))
	le.PutUint32(run[36:], 1000)
	e, err := DecodeExit(run)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(e.(InternalErrorExit).Data); n != 16 {
		t.Fatalf("len(Data) = %d, want 16", n)
	}
}

func TestInstructionBytes(t *testing.T) {
	tests := []struct {
		name string
		exit InternalErrorExit
		want []byte
		ok   bool
	}{
		{"int3", InternalErrorExit{Suberror: InternalErrorEmulation, Data: []uint64{1, 0xcc01, 0}}, []byte{0xcc}, true},
		{"15 bytes", InternalErrorExit{Suberror: InternalErrorEmulation, Data: []uint64{1, 0x0706050403020100 | 0x0f, 0x0f0e0d0c0b0a0908}},
			[]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, true},
		{"flag clear", InternalErrorExit{Suberror: InternalErrorEmulation, Data: []uint64{0, 0xcc01, 0}}, nil, false},
		{"other suberror", InternalErrorExit{Suberror: InternalErrorSimulEx, Data: []uint64{1, 0xcc01, 0}}, nil, false},
		{"too little data", InternalErrorExit{Suberror: InternalErrorEmulation, Data: []uint64{1, 0xcc01}}, nil, false},
		{"size 16", InternalErrorExit{Suberror: InternalErrorEmulation, Data: []uint64{1, 0x10, 0}}, nil, false},
		{"size 0", InternalErrorExit{Suberror: InternalErrorEmulation, Data: []uint64{1, 0, 0}}, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.exit.InstructionBytes()
			if ok != tc.ok || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("InstructionBytes = %x, %v; want %x, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestEncodeExitRejects(t *testing.T) {
	tests := []struct {
		name string
		run  []byte
		exit Exit
	}{
		{"short page", make([]byte, 100), HLTExit{}},
		{"io data length mismatch", page(), IOExit{Port: 1, Size: 2, Count: 1, Data: []byte{1}}},
		{"io data beyond page", make([]byte, PIODataOffset+1), IOExit{Port: 1, Size: 4, Count: 1, Data: make([]byte, 4)}},
		{"mmio len 9", page(), MMIOExit{Len: 9, Data: make([]byte, 9)}},
		{"internal 17 words", page(), InternalErrorExit{Data: make([]uint64, 17)}},
		{"system event flags mismatch", page(), SystemEventExit{Flags: 1, Data: []uint64{2}}},
		{"hw reason on other exit", page(), UnknownExit{Reason: ExitNMI, HardwareReason: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := EncodeExit(tc.run, tc.exit); err == nil {
				t.Fatal("EncodeExit accepted an impossible exit")
			}
		})
	}
}

// within reports whether b lies inside run's backing array.
func within(b, run []byte) bool {
	if len(b) == 0 {
		return true
	}
	start := uintptr(unsafe.Pointer(&run[0]))
	p := uintptr(unsafe.Pointer(&b[0]))
	return p >= start && p+uintptr(cap(b)) <= start+uintptr(len(run))
}

func FuzzDecodeExit(f *testing.F) {
	for _, e := range []Exit{
		IOExit{Port: 0x3f8, Size: 1, Count: 1, Data: []byte{'x'}},
		IOExit{Port: 0x60, Size: 1, In: true, Count: 4, Data: make([]byte, 4)},
		MMIOExit{Addr: 0xfec0_0000, Len: 4, Data: make([]byte, 4), Write: true},
		HLTExit{},
		ShutdownExit{},
		InternalErrorExit{Suberror: InternalErrorEmulation, Data: []uint64{1, 0xcc01, 0}},
		SystemEventExit{Type: SystemEventShutdown, Data: []uint64{}},
		FailEntryExit{Reason: 7, CPU: 1},
		UnknownExit{Reason: ExitUnknown, HardwareReason: 2},
	} {
		run := page()
		if err := EncodeExit(run, e); err != nil {
			f.Fatal(err)
		}
		f.Add(run)
	}
	f.Add(make([]byte, runMinSize))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, run []byte) {
		e, err := DecodeExit(run)
		if err != nil {
			if !errors.Is(err, ErrBadRun) {
				t.Fatalf("error %v does not wrap ErrBadRun", err)
			}
			return
		}
		if uint32(e.Kind()) != binary.LittleEndian.Uint32(run[runOffExitReason:]) {
			t.Fatalf("Kind %v differs from the page's exit_reason", e.Kind())
		}
		switch x := e.(type) {
		case IOExit:
			if len(x.Data) != int(x.Size)*int(x.Count) || !within(x.Data, run) {
				t.Fatalf("IO data %d bytes (cap %d) for size %d count %d, or outside the page", len(x.Data), cap(x.Data), x.Size, x.Count)
			}
		case MMIOExit:
			if len(x.Data) != int(x.Len) || x.Len > 8 || !within(x.Data, run) {
				t.Fatalf("MMIO data %d bytes for len %d", len(x.Data), x.Len)
			}
		case InternalErrorExit:
			if len(x.Data) > maxInternalData {
				t.Fatalf("%d internal data words", len(x.Data))
			}
			if b, ok := x.InstructionBytes(); ok && (len(b) == 0 || len(b) > maxInsnBytes) {
				t.Fatalf("%d instruction bytes", len(b))
			}
		case SystemEventExit:
			if len(x.Data) > maxInternalData {
				t.Fatalf("%d system event data words", len(x.Data))
			}
		}
		// Whatever decodes must re-encode to a page that decodes the same.
		size := RunPageSize
		if io, ok := e.(IOExit); ok {
			size = max(size, PIODataOffset+len(io.Data))
		}
		again := make([]byte, size)
		if err := EncodeExit(again, e); err != nil {
			if u, ok := e.(UnknownExit); ok && u.Reason != ExitUnknown {
				return
			}
			t.Fatalf("EncodeExit(%#v): %v", e, err)
		}
		e2, err := DecodeExit(again)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !reflect.DeepEqual(e, e2) {
			t.Fatalf("round trip: %#v became %#v", e, e2)
		}
	})
}

func BenchmarkDecodeExitIO(b *testing.B) {
	run := page()
	if err := EncodeExit(run, IOExit{Port: 0x3f8, Size: 1, Count: 1, Data: []byte{'x'}}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for range b.N {
		if _, err := DecodeExit(run); err != nil {
			b.Fatal(err)
		}
	}
}
