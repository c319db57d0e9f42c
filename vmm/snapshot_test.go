package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"kvmstack/virtio"
	virtiopci "kvmstack/virtio/pci"
	"kvmstack/vmm/arch/x86"
	pcibus "kvmstack/vmm/devices/pci"
	"kvmstack/vmm/kvm"
	"kvmstack/vmm/memory"
	"kvmstack/vmm/snapshot"
)

func TestSavedConfigRoundTrip(t *testing.T) {
	cfg := Config{
		Kernel: "/k/vmlinux", Initrd: "/k/initrd", Cmdline: "console=ttyS0", CPUs: 2, MemoryBytes: 256 << 20, PreferPVH: true,
		Disks: []DiskConfig{{Path: "/d/root.img", ReadOnly: true, ID: "root"}},
		Nets:  []NetConfig{{Tap: "tap0", MAC: "52:54:00:12:34:56"}},
		RNG:   true,
	}
	cfg.Disks[0].RateLimit.Bandwidth = TokenBucket{Size: 1 << 20, RefillTime: time.Second}
	b, err := json.Marshal(saveConfig(cfg, "console=ttyS0 noxsave"))
	if err != nil {
		t.Fatal(err)
	}
	var sc savedConfig
	if err := json.Unmarshal(b, &sc); err != nil {
		t.Fatal(err)
	}
	if got := sc.config(); !reflect.DeepEqual(got, cfg) {
		t.Fatalf("config after a round trip:\n%+v\nwant\n%+v", got, cfg)
	}
	if sc.GuestCmdline != "console=ttyS0 noxsave" {
		t.Fatalf("guest command line %q", sc.GuestCmdline)
	}
}

func TestSaveableMSRs(t *testing.T) {
	got := saveableMSRs([]uint32{0x10, x86.MSRIA32ArchCaps, 0x174, 0x4b564d01, 0x6e0})
	if want := []uint32{0x10, 0x174, 0x4b564d01, 0x6e0}; !slices.Equal(got, want) {
		t.Fatalf("saveableMSRs = %#x, want %#x", got, want)
	}
}

func TestMappingFile(t *testing.T) {
	maps := []byte("55d0c0000000-55d0c0001000 r--p 00000000 fd:01 1234 /usr/bin/vmm\n" +
		"7f0000000000-7f0010000000 rw-p 00000000 08:12 98765 /snap/memory\n" +
		"7f0010000000-7f0020000000 rw-p 00000000 00:00 0 \n")
	tests := []struct {
		addr uintptr
		dev  [2]uint64
		ino  uint64
		ok   bool
	}{
		{0x7f0000001000, [2]uint64{8, 0x12}, 98765, true},
		{0x7f0010000000, [2]uint64{0, 0}, 0, true},
		{0x55d0c0000fff, [2]uint64{0xfd, 1}, 1234, true},
		{0x1000, [2]uint64{}, 0, false},
	}
	for _, tc := range tests {
		dev, ino, ok := mappingFile(maps, tc.addr)
		if dev != tc.dev || ino != tc.ino || ok != tc.ok {
			t.Errorf("mappingFile(%#x) = %v, %d, %v; want %v, %d, %v", tc.addr, dev, ino, ok, tc.dev, tc.ino, tc.ok)
		}
	}
}

func TestRAMMappedFrom(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, snapshot.MemoryFile)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, memory.MinSize); err != nil {
		t.Fatal(err)
	}
	mem, err := mapMemoryFile(path, memory.MinSize)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	m := &Machine{mem: mem}
	if !m.ramMappedFrom(path) {
		t.Fatal("the machine's own memory file not recognised")
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if m.ramMappedFrom(other) || m.ramMappedFrom(filepath.Join(dir, "missing")) {
		t.Fatal("an unrelated file reported as the RAM's backing")
	}
	anon, err := memory.New(memory.MinSize)
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if (&Machine{mem: anon}).ramMappedFrom(path) {
		t.Fatal("anonymous RAM reported as mapped from a file")
	}
}

// minimalState is a state that passes snapshot's checks: one vCPU, no
// virtio devices.
func minimalState() *snapshot.State {
	st := &snapshot.State{VCPUs: []snapshot.VCPU{{CPUID: []kvm.CPUIDEntry2{{}}}}}
	st.VM.PICMaster.ChipID, st.VM.PICSlave.ChipID, st.VM.IOAPIC.ChipID = kvm.IRQChipPICMaster, kvm.IRQChipPICSlave, kvm.IRQChipIOAPIC
	return st
}

// TestRestoreRefusesInconsistentSnapshots covers what Restore checks
// before it touches KVM: a snapshot whose files are intact but whose
// configuration does not describe its own state.
func TestRestoreRefusesInconsistentSnapshots(t *testing.T) {
	ram := [][]byte{make([]byte, memory.MinSize)}
	good := saveConfig(Config{Kernel: "/k", CPUs: 1, MemoryBytes: memory.MinSize}, "")
	tests := []struct {
		name   string
		config any
		state  func(*snapshot.State)
		also   error
	}{
		{"two vCPUs configured, one saved", func() savedConfig { c := good; c.CPUs = 2; return c }(), nil, nil},
		{"memory size differs", func() savedConfig { c := good; c.MemoryBytes = 2 * memory.MinSize; return c }(), nil, nil},
		{"invalid configuration", func() savedConfig { c := good; c.Kernel = ""; return c }(), nil, ErrConfig},
		{"unknown configuration field", map[string]any{"kernel": "/k", "cpus": 1, "memory_bytes": memory.MinSize, "gpu": true}, nil, nil},
		{"virtio device saved but not configured", good, func(s *snapshot.State) {
			s.Devices.PCI = &pcibus.BusState{}
			s.Devices.Virtio = []virtiopci.TransportState{{Queues: []virtio.QueueState{{Size: 8}}}}
		}, nil},
		{"disk configured, not saved", func() savedConfig { c := good; c.Disks = []DiskConfig{{Path: "/d"}}; return c }(), nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := json.Marshal(tc.config)
			if err != nil {
				t.Fatal(err)
			}
			st := minimalState()
			if tc.state != nil {
				tc.state(st)
			}
			dir := filepath.Join(t.TempDir(), "snap")
			if _, err := snapshot.Write(context.Background(), dir, snapshot.Manifest{Config: cfg}, st, ram); err != nil {
				t.Fatal(err)
			}
			_, err = Restore(context.Background(), dir, nil, RestoreOptions{})
			if !errors.Is(err, ErrSnapshotCorrupt) || (tc.also != nil && !errors.Is(err, tc.also)) {
				t.Fatalf("Restore = %v, want ErrSnapshotCorrupt (and %v)", err, tc.also)
			}
		})
	}
	if _, err := Restore(context.Background(), t.TempDir(), nil, RestoreOptions{}); !errors.Is(err, ErrSnapshotCorrupt) {
		t.Fatalf("Restore of an empty directory = %v", err)
	}
}
