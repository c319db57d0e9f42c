package vmm

import (
	"errors"
	"strings"
	"testing"

	"kvmstack/vmm/devices"
	"kvmstack/vmm/kvm"
)

// fakeVCPU records what exit handling does to a vCPU.
type fakeVCPU struct {
	regs   kvm.Regs
	events kvm.VCPUEvents
	setEv  int
	err    error
}

func (f *fakeVCPU) ID() int                    { return 0 }
func (f *fakeVCPU) GetRegs() (kvm.Regs, error) { return f.regs, f.err }
func (f *fakeVCPU) SetRegs(r kvm.Regs) error   { f.regs = r; return f.err }
func (f *fakeVCPU) GetVCPUEvents() (kvm.VCPUEvents, error) {
	return f.events, f.err
}
func (f *fakeVCPU) SetVCPUEvents(e kvm.VCPUEvents) error { f.events = e; f.setEv++; return f.err }

type portLog struct {
	writes []string
}

func (p *portLog) Read(off uint64, d []byte) {
	for i := range d {
		d[i] = byte(0x40 + off)
	}
}
func (p *portLog) Write(off uint64, d []byte) { p.writes = append(p.writes, string(d)) }

func newTestHandler(t *testing.T) (*exitHandler, *portLog) {
	t.Helper()
	pio := devices.NewBus("pio")
	log := &portLog{}
	if err := pio.Register(0x3f8, 8, log); err != nil {
		t.Fatal(err)
	}
	return &exitHandler{pio: pio, mmio: devices.NewBus("mmio"), stats: &exitStats{}}, log
}

func emulationFailure(t *testing.T, insn ...byte) kvm.InternalErrorExit {
	t.Helper()
	data, err := kvm.EmulationFailureData(insn)
	if err != nil {
		t.Fatal(err)
	}
	return kvm.InternalErrorExit{Suberror: kvm.InternalErrorEmulation, Data: data}
}

func TestHandleExit(t *testing.T) {
	tests := []struct {
		name    string
		exit    func(t *testing.T) kvm.Exit
		stop    bool
		outcome Outcome
		errHas  string
	}{
		{"portOut", func(*testing.T) kvm.Exit {
			return kvm.IOExit{Port: 0x3f8, Size: 1, Count: 1, Data: []byte("A")}
		}, false, OutcomeNone, ""},
		{"unhandledPort", func(*testing.T) kvm.Exit {
			return kvm.IOExit{Port: 0x1234, Size: 2, In: true, Count: 1, Data: make([]byte, 2)}
		}, false, OutcomeNone, ""},
		{"mmioNobody", func(*testing.T) kvm.Exit {
			return kvm.MMIOExit{Addr: 0xd000_0000, Len: 4, Data: make([]byte, 4)}
		}, false, OutcomeNone, ""},
		{"tripleFault", func(*testing.T) kvm.Exit { return kvm.ShutdownExit{} }, true, OutcomeCrash, "triple fault"},
		{"systemReset", func(*testing.T) kvm.Exit { return kvm.SystemEventExit{Type: kvm.SystemEventReset} }, true, OutcomeReset, ""},
		{"systemShutdown", func(*testing.T) kvm.Exit { return kvm.SystemEventExit{Type: kvm.SystemEventShutdown} }, true, OutcomePowerOff, ""},
		{"systemCrash", func(*testing.T) kvm.Exit { return kvm.SystemEventExit{Type: kvm.SystemEventCrash} }, true, OutcomeCrash, "crash"},
		{"failEntry", func(*testing.T) kvm.Exit { return kvm.FailEntryExit{Reason: 0x21} }, true, OutcomeError, "VM entry failed"},
		{"popcnt", func(t *testing.T) kvm.Exit { return emulationFailure(t, 0xf3, 0x48, 0x0f, 0xb8, 0xc0) }, true, OutcomeError, "f3 48 0f b8 c0"},
		{"internalNoBytes", func(*testing.T) kvm.Exit {
			return kvm.InternalErrorExit{Suberror: kvm.InternalErrorSimulEx, Data: []uint64{1}}
		}, true, OutcomeError, "internal error"},
		{"unknown", func(*testing.T) kvm.Exit { return kvm.UnknownExit{Reason: 99} }, true, OutcomeError, "unhandled exit"},
		{"intr", func(*testing.T) kvm.Exit { return kvm.IntrExit{} }, false, OutcomeNone, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTestHandler(t)
			v := &fakeVCPU{regs: kvm.Regs{RIP: 0xffffffff81000000}}
			vd := h.handle(v, tt.exit(t))
			if vd.stop != tt.stop || vd.outcome != tt.outcome {
				t.Fatalf("verdict = %+v, want stop=%v outcome=%v", vd, tt.stop, tt.outcome)
			}
			if tt.errHas == "" && vd.err != nil {
				t.Fatalf("unexpected error %v", vd.err)
			}
			if tt.errHas != "" && (vd.err == nil || !strings.Contains(vd.err.Error(), tt.errHas)) {
				t.Fatalf("error %v, want one containing %q", vd.err, tt.errHas)
			}
		})
	}
}

func TestEmulationErrorNamesRIP(t *testing.T) {
	h, _ := newTestHandler(t)
	v := &fakeVCPU{regs: kvm.Regs{RIP: 0xffffffff81234567}}
	vd := h.handle(v, emulationFailure(t, 0x0f, 0xc7, 0xf0))
	var ee *EmulationError
	if !errors.As(vd.err, &ee) || ee.RIP != 0xffffffff81234567 || len(ee.Bytes) != 3 {
		t.Fatalf("error = %#v, want an EmulationError with RIP and 3 bytes", vd.err)
	}
	if !strings.Contains(ee.Error(), "0xffffffff81234567") {
		t.Fatalf("message lacks RIP: %s", ee)
	}
}

// TestInt3Fixup is the kvm_pvm workaround: an int3 the emulator refused is
// stepped over and #BP injected, so the guest's own handler runs.
func TestInt3Fixup(t *testing.T) {
	h, _ := newTestHandler(t)
	v := &fakeVCPU{regs: kvm.Regs{RIP: 0x1000, RAX: 7}, events: kvm.VCPUEvents{Flags: kvm.VCPUEventValidShadow}}
	vd := h.handle(v, emulationFailure(t, 0xcc))
	if vd.stop {
		t.Fatalf("int3 stopped the machine: %v", vd.err)
	}
	if v.regs.RIP != 0x1001 || v.regs.RAX != 7 {
		t.Errorf("regs after fixup = RIP %#x RAX %d, want RIP 0x1001 and RAX untouched", v.regs.RIP, v.regs.RAX)
	}
	ex := v.events.Exception
	if v.setEv != 1 || ex.Injected != 1 || ex.Nr != kvm.BPVector || ex.HasErrorCode != 0 || v.events.Flags != 0 {
		t.Errorf("events after fixup = %+v (set %d times), want #BP injected once", v.events, v.setEv)
	}
	if h.stats.int3Fixups.Load() != 1 {
		t.Errorf("int3 fixups counted %d", h.stats.int3Fixups.Load())
	}
	// An exception already in flight cannot take a second one: stop
	// rather than lose it.
	v = &fakeVCPU{regs: kvm.Regs{RIP: 0x1000}}
	v.events.Exception.Pending = 1
	v.events.Exception.Nr = kvm.PFVector
	if vd := h.handle(v, emulationFailure(t, 0xcc)); !vd.stop || vd.err == nil {
		t.Fatalf("int3 with a pending #PF: verdict %+v, want a stop", vd)
	}
	// A failing ioctl is an error, not a silent retry.
	v = &fakeVCPU{err: errors.New("KVM_GET_REGS: bad fd")}
	if vd := h.handle(v, emulationFailure(t, 0xcc)); !vd.stop || vd.outcome != OutcomeError {
		t.Fatalf("ioctl failure: verdict %+v, want OutcomeError", vd)
	}
}

func TestRepStringIO(t *testing.T) {
	h, log := newTestHandler(t)
	v := &fakeVCPU{}
	h.handle(v, kvm.IOExit{Port: 0x3f8, Size: 1, Count: 3, Data: []byte("abc")})
	if strings.Join(log.writes, "") != "abc" {
		t.Fatalf("rep outsb wrote %q", log.writes)
	}
	in := kvm.IOExit{Port: 0x3f9, Size: 1, In: true, Count: 2, Data: make([]byte, 2)}
	h.handle(v, in)
	if string(in.Data) != "AA" {
		t.Fatalf("rep insb read %q, want device data", in.Data)
	}
	open := kvm.IOExit{Port: 0x500, Size: 4, In: true, Count: 1, Data: make([]byte, 4)}
	h.handle(v, open)
	if string(open.Data) != "\xff\xff\xff\xff" {
		t.Fatalf("open bus read %x, want ff", open.Data)
	}
	if h.stats.unhandledIO.Load() != 1 {
		t.Fatalf("unhandled count %d", h.stats.unhandledIO.Load())
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"ok", Config{Kernel: "k", CPUs: 1, MemoryBytes: 128 << 20}, true},
		{"noKernel", Config{CPUs: 1, MemoryBytes: 128 << 20}, false},
		{"zeroCPUs", Config{Kernel: "k", MemoryBytes: 128 << 20}, false},
		{"tooManyCPUs", Config{Kernel: "k", CPUs: 255, MemoryBytes: 128 << 20}, false},
		{"tinyRAM", Config{Kernel: "k", CPUs: 1, MemoryBytes: 1 << 20}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrConfig)) {
				t.Fatalf("Validate() = %v, want ok=%v and ErrConfig", err, tt.ok)
			}
		})
	}
}
