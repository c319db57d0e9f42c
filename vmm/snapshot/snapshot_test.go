package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kvmstack/virtio"
	virtiopci "kvmstack/virtio/pci"
	"kvmstack/vmm/devices"
	pcibus "kvmstack/vmm/devices/pci"
	"kvmstack/vmm/kvm"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// sampleState is a two-vCPU machine with one virtio device, every part set
// to something other than its zero value.
func sampleState() *State {
	var s State
	for id := range 2 {
		v := VCPU{ID: id, MPState: kvm.MPStateRunnable, TSCKHz: 2_000_000}
		v.Regs.RIP, v.Regs.RSP, v.Regs.RFLAGS = 0xffffffff81000000+uint64(id), 0x8000, 0x202
		v.Sregs.CR0, v.Sregs.EFER, v.Sregs.APICBase = 0x80050033, 0xd01, 0xfee00900
		v.Sregs.CS = kvm.Segment{Selector: 0x10, Type: 11, Present: 1, S: 1, L: 1}
		v.FPU.FCW, v.FPU.XMM[3][7] = 0x37f, 0xaa
		v.XSave = &kvm.XSave{}
		v.XSave.Region[6] = 0x1f80
		v.XCRs = &kvm.XCRs{NrXCRs: 1, XCRs: [kvm.MaxXCRs]kvm.XCR{{XCR: 0, Value: 3}}}
		v.LAPIC.SetReg32(0x20, uint32(id)<<24)
		v.MSRs = []kvm.MSREntry{{Index: 0x10, Data: 123456789}, {Index: 0xc0000082, Data: 0xffffffff81a00000}}
		v.Events.Exception = kvm.VCPUEventsException{Injected: 1, Nr: kvm.BPVector}
		v.DebugRegs.DR7 = 0x400
		v.CPUID = []kvm.CPUIDEntry2{{Function: 0, EAX: 0xd, EBX: 0x68747541}, {Function: 1, EAX: 0xa20f10, EBX: uint32(id) << 24}}
		s.VCPUs = append(s.VCPUs, v)
	}
	s.VM.PICMaster = kvm.IRQChip{ChipID: kvm.IRQChipPICMaster}
	s.VM.PICMaster.SetPIC(kvm.PICState{IRQBase: 0x30, IMR: 0xfb})
	s.VM.PICSlave = kvm.IRQChip{ChipID: kvm.IRQChipPICSlave}
	s.VM.IOAPIC = kvm.IRQChip{ChipID: kvm.IRQChipIOAPIC}
	s.VM.IOAPIC.SetIOAPIC(kvm.IOAPICState{BaseAddress: 0xfec00000, RedirTbl: [kvm.IOAPICNumPins]uint64{4: 0x24}})
	s.VM.PIT.Channels[0] = kvm.PITChannelState{Count: 0x10000, Mode: 2, Gate: 1}
	s.VM.Clock = kvm.ClockData{Clock: 5_000_000_000}
	s.Devices.Serial = devices.SerialState{IER: 3, LCR: 3, MCR: 0xb, DLL: 1, MSR: 0xb0, RX: []byte("ls\n")}
	s.Devices.I8042 = devices.I8042State{CTR: 0x30, Status: 4}
	s.Devices.ACPIPM = devices.ACPIPMState{SleepStatus: 0x80}
	bus := pcibus.BusState{ConfigAddress: 0x80000800, Slots: make([]*pcibus.ConfigState, 32)}
	for i := range 2 {
		bus.Slots[i] = &pcibus.ConfigState{Regs: bytes.Repeat([]byte{byte(i + 1)}, pcibus.ConfigSize)}
	}
	bus.Slots[1].BARs[0] = 0xc0000000
	s.Devices.PCI = &bus
	s.Devices.Virtio = []virtiopci.TransportState{{
		DeviceType: uint32(virtio.DeviceBlock), DriverFeatures: 1<<32 | 1<<29, Status: 15, Activated: true, ConfigVector: 0,
		Queues: []virtio.QueueState{{Size: 256, Enabled: true, Desc: 0x100000, Driver: 0x101000, Device: 0x102000, Vector: 1, LastAvail: 77, UsedIdx: 77}},
		MSIX:   pcibus.MSIXState{Table: make([]byte, 32), PBA: []uint64{0}},
	}}
	return &s
}

// sampleRAM is 4 MiB with a few non-zero pages, in two regions as a
// machine above 3 GiB has.
func sampleRAM() [][]byte {
	ram := [][]byte{make([]byte, 3<<20), make([]byte, 1<<20)}
	ram[0][0] = 1
	copy(ram[0][5*pageSize+100:], "kernel text")
	ram[0][len(ram[0])-1] = 0xff
	copy(ram[1][2*pageSize:], bytes.Repeat([]byte{0x5a}, 3*pageSize))
	return ram
}

func sampleManifest() Manifest {
	return Manifest{
		VMMVersion: "test",
		Created:    time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC),
		Config:     json.RawMessage(`{"cpus":2,"memory_bytes":4194304}`),
	}
}

func writeSample(t *testing.T) (string, *State, [][]byte) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "snap")
	st, ram := sampleState(), sampleRAM()
	if _, err := Write(context.Background(), dir, sampleManifest(), st, ram); err != nil {
		t.Fatal(err)
	}
	return dir, st, ram
}

func TestWriteOpenRoundTrip(t *testing.T) {
	dir, st, ram := writeSample(t)
	for _, skip := range []bool{false, true} {
		s, err := Open(context.Background(), dir, OpenOptions{SkipMemoryChecksum: skip})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(s.State, st) {
			t.Fatalf("decoded state differs:\n%+v\n%+v", s.State, st)
		}
		if s.Manifest.MemoryBytes != 4<<20 || compact(t, s.Manifest.Config) != `{"cpus":2,"memory_bytes":4194304}` {
			t.Fatalf("manifest %+v", s.Manifest)
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, MemoryFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(append([]byte(nil), ram[0]...), ram[1]...)) {
		t.Fatal("memory file is not the regions back to back")
	}
	var fs unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, MemoryFile), &fs); err != nil {
		t.Fatal(err)
	}
	// 5 non-zero pages of 1024; allow file-system block rounding.
	if used := fs.Blocks * 512; used > 64<<10 {
		t.Errorf("memory file occupies %d bytes on disk: zero pages were written, not left as holes", used)
	}
	s, _ := Open(context.Background(), dir, OpenOptions{})
	if f, _ := s.Manifest.File(MemoryFile); f.Checksum != MemoryChecksum(ram) {
		t.Fatalf("manifest memory checksum %s, MemoryChecksum %s", f.Checksum, MemoryChecksum(ram))
	}
}

func compact(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// editFile applies f to the named file of dir.
func editFile(t *testing.T, dir, name string, f func([]byte) []byte) {
	t.Helper()
	p := filepath.Join(dir, name)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, f(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

func setManifestField(key string, value any) func([]byte) []byte {
	return func(b []byte) []byte {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			panic(err)
		}
		m[key] = value
		out, err := json.Marshal(m)
		if err != nil {
			panic(err)
		}
		return out
	}
}

func TestOpenRefusesDamagedSnapshots(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   error
	}{
		{"no manifest", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, ManifestFile)) }, ErrSnapshotCorrupt},
		{"manifest truncated", func(t *testing.T, dir string) {
			editFile(t, dir, ManifestFile, func(b []byte) []byte { return b[:len(b)/2] })
		}, ErrSnapshotCorrupt},
		{"newer format", func(t *testing.T, dir string) { editFile(t, dir, ManifestFile, setManifestField("format_version", 2)) }, ErrSnapshotVersion},
		{"older format", func(t *testing.T, dir string) { editFile(t, dir, ManifestFile, setManifestField("format_version", 0)) }, ErrSnapshotVersion},
		{"not a snapshot", func(t *testing.T, dir string) { editFile(t, dir, ManifestFile, setManifestField("magic", "qemu")) }, ErrSnapshotVersion},
		{"unknown manifest field", func(t *testing.T, dir string) { editFile(t, dir, ManifestFile, setManifestField("extra", 1)) }, ErrSnapshotCorrupt},
		{"state byte flipped", func(t *testing.T, dir string) {
			editFile(t, dir, StateFile, func(b []byte) []byte { b[len(b)/2] ^= 1; return b })
		}, ErrSnapshotCorrupt},
		{"state truncated", func(t *testing.T, dir string) {
			editFile(t, dir, StateFile, func(b []byte) []byte { return b[:len(b)-10] })
		}, ErrSnapshotCorrupt},
		{"state missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, StateFile)) }, ErrSnapshotCorrupt},
		{"memory truncated", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, MemoryFile), 2<<20); err != nil {
				t.Fatal(err)
			}
		}, ErrSnapshotCorrupt},
		{"memory byte flipped", func(t *testing.T, dir string) {
			editFile(t, dir, MemoryFile, func(b []byte) []byte { b[5*pageSize+101] ^= 0x20; return b })
		}, ErrSnapshotCorrupt},
		{"byte written into a zero page", func(t *testing.T, dir string) {
			f, err := os.OpenFile(filepath.Join(dir, MemoryFile), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{7}, 200*pageSize); err != nil {
				t.Fatal(err)
			}
		}, ErrSnapshotCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, _, _ := writeSample(t)
			tc.damage(t, dir)
			_, err := Open(context.Background(), dir, OpenOptions{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestWriteInvalidatesTheOldSnapshotFirst(t *testing.T) {
	dir, _, _ := writeSample(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Write(ctx, dir, sampleManifest(), sampleState(), sampleRAM()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write with a cancelled context = %v", err)
	}
	if _, err := Open(context.Background(), dir, OpenOptions{}); !errors.Is(err, ErrSnapshotCorrupt) {
		t.Fatalf("Open after a failed Write = %v, want ErrSnapshotCorrupt", err)
	}
}

func TestMemoryChecksumIgnoresHoleLayout(t *testing.T) {
	ram := sampleRAM()
	dir := t.TempDir()
	info, err := writeMemory(context.Background(), filepath.Join(dir, "sparse"), ram)
	if err != nil {
		t.Fatal(err)
	}
	// The same bytes written densely (a copy that lost its holes).
	dense := filepath.Join(dir, "dense")
	if err := os.WriteFile(dense, append(append([]byte(nil), ram[0]...), ram[1]...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := verifyMemory(context.Background(), dense, info); err != nil {
		t.Fatalf("dense copy: %v", err)
	}
	if err := verifyMemory(context.Background(), filepath.Join(dir, "sparse"), info); err != nil {
		t.Fatalf("sparse file: %v", err)
	}
}

func TestDecodeStateBounds(t *testing.T) {
	tests := []struct {
		name string
		mut  func(*State)
	}{
		{"no vCPUs", func(s *State) { s.VCPUs = nil }},
		{"ids out of order", func(s *State) { s.VCPUs[1].ID = 0 }},
		{"too many MSRs", func(s *State) { s.VCPUs[0].MSRs = make([]kvm.MSREntry, maxMSRs+1) }},
		{"no CPUID", func(s *State) { s.VCPUs[1].CPUID = nil }},
		{"too many XCRs", func(s *State) { s.VCPUs[0].XCRs.NrXCRs = kvm.MaxXCRs + 1 }},
		{"irqchip swapped", func(s *State) { s.VM.PICMaster, s.VM.IOAPIC = s.VM.IOAPIC, s.VM.PICMaster }},
		{"serial input overflow", func(s *State) { s.Devices.Serial.RX = make([]byte, 4097) }},
		{"virtio without bus", func(s *State) { s.Devices.PCI = nil }},
		{"virtio without queues", func(s *State) { s.Devices.Virtio[0].Queues = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := sampleState()
			tc.mut(s)
			b, err := EncodeState(s)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := DecodeState(b); !errors.Is(err, ErrSnapshotCorrupt) {
				t.Fatalf("DecodeState = %v, want ErrSnapshotCorrupt", err)
			}
		})
	}
}

// TestManifestGolden pins the manifest's byte layout: a change here is a
// format change and needs FormatVersion bumped. go test -update rewrites it.
func TestManifestGolden(t *testing.T) {
	m := sampleManifest()
	m.Magic, m.FormatVersion, m.MemoryBytes = Magic, FormatVersion, 4<<20
	m.Files = []FileInfo{
		{Name: StateFile, Size: 1234, Checksum: "sha256:" + string(bytes.Repeat([]byte("ab"), 32))},
		{Name: MemoryFile, Size: 4 << 20, Checksum: MemoryChecksum(sampleRAM())},
	}
	got, err := EncodeManifest(&m)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "manifest.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("manifest encoding changed:\n%s\nwant:\n%s", got, want)
	}
	back, err := DecodeManifest(want)
	if err == nil {
		back.Config = json.RawMessage(compact(t, back.Config))
	}
	if err != nil || !reflect.DeepEqual(*back, m) {
		t.Fatalf("golden manifest decodes to %+v, %v", back, err)
	}
}

func TestVerifyMemoryAfterSkippedCheck(t *testing.T) {
	dir, _, _ := writeSample(t)
	editFile(t, dir, MemoryFile, func(b []byte) []byte { b[0] ^= 0x80; return b })
	s, err := Open(context.Background(), dir, OpenOptions{SkipMemoryChecksum: true})
	if err != nil {
		t.Fatalf("Open skipping the memory checksum: %v", err)
	}
	if err := s.VerifyMemory(context.Background()); !errors.Is(err, ErrSnapshotCorrupt) {
		t.Fatalf("VerifyMemory of a flipped page = %v, want ErrSnapshotCorrupt", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.VerifyMemory(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("VerifyMemory with a cancelled context = %v", err)
	}
}
