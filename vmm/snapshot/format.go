package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	virtiopci "kvmstack/virtio/pci"
	"kvmstack/vmm/devices"
	pcibus "kvmstack/vmm/devices/pci"
	"kvmstack/vmm/kvm"
)

// FormatVersion is the only format this build reads and writes. Any change
// to the files' meaning or layout bumps it; there is no migration.
const FormatVersion = 1

// Magic identifies a manifest as a kvmstack VM snapshot.
const Magic = "kvmstack-vm-snapshot"

// File names inside a snapshot directory.
const (
	ManifestFile = "manifest.json"
	StateFile    = "state.json"
	MemoryFile   = "memory"
)

// Sentinel errors; the detail is wrapped around them.
var (
	// ErrSnapshotVersion: the directory holds a snapshot of another
	// format version (or something that is not a snapshot at all).
	ErrSnapshotVersion = errors.New("unsupported snapshot format")
	// ErrSnapshotCorrupt: a file is missing, truncated, fails its
	// checksum, or decodes to state out of bounds.
	ErrSnapshotCorrupt = errors.New("corrupt snapshot")
)

// Manifest describes a snapshot directory.
type Manifest struct {
	Magic         string `json:"magic"`
	FormatVersion int    `json:"format_version"`
	// VMMVersion is the build that wrote the snapshot, for the operator;
	// compatibility is decided by FormatVersion alone.
	VMMVersion string    `json:"vmm_version"`
	Created    time.Time `json:"created"`
	// Config is the machine configuration, encoded by package vmm.
	Config json.RawMessage `json:"config"`
	// MemoryBytes is guest RAM, the memory file's length.
	MemoryBytes uint64 `json:"memory_bytes"`
	// Files lists every other file with its size and checksum.
	Files []FileInfo `json:"files"`
}

// FileInfo is one file of a snapshot.
type FileInfo struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// Checksum is "sha256:<hex>" over the whole file, or for the memory
	// file "crc32c-pages:<hex>" (see MemoryChecksum).
	Checksum string `json:"checksum"`
}

// File returns the entry named name.
func (m *Manifest) File(name string) (FileInfo, bool) {
	for _, f := range m.Files {
		if f.Name == name {
			return f, true
		}
	}
	return FileInfo{}, false
}

// Limits on decoded state: far above any machine vmm builds, low enough
// that a corrupt file cannot make restore allocate without bound.
const (
	maxVCPUs      = 255
	maxMSRs       = 1024
	maxCPUID      = 256
	maxXSaveWords = 1 << 16
	maxManifest   = 1 << 20
	maxState      = 64 << 20
	maxFiles      = 16
)

// EncodeManifest is the manifest's byte layout: indented JSON ending in a
// newline.
func EncodeManifest(m *Manifest) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding snapshot manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// DecodeManifest parses and checks a manifest: magic and version first, so
// that a future format is reported as such even if its other fields
// changed.
func DecodeManifest(b []byte) (*Manifest, error) {
	if len(b) > maxManifest {
		return nil, fmt.Errorf("%w: manifest of %d bytes", ErrSnapshotCorrupt, len(b))
	}
	var head struct {
		Magic         string `json:"magic"`
		FormatVersion int    `json:"format_version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrSnapshotCorrupt, err)
	}
	if head.Magic != Magic {
		return nil, fmt.Errorf("%w: manifest magic %q, want %q", ErrSnapshotVersion, head.Magic, Magic)
	}
	if head.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("%w: format version %d, this vmm reads %d", ErrSnapshotVersion, head.FormatVersion, FormatVersion)
	}
	var m Manifest
	if err := decodeStrict(b, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrSnapshotCorrupt, err)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

func (m *Manifest) validate() error {
	if len(m.Config) == 0 || m.MemoryBytes == 0 {
		return fmt.Errorf("%w: manifest without config or memory size", ErrSnapshotCorrupt)
	}
	if len(m.Files) > maxFiles {
		return fmt.Errorf("%w: manifest lists %d files", ErrSnapshotCorrupt, len(m.Files))
	}
	seen := map[string]bool{}
	for _, f := range m.Files {
		if f.Name != StateFile && f.Name != MemoryFile {
			return fmt.Errorf("%w: manifest lists unknown file %q", ErrSnapshotCorrupt, f.Name)
		}
		if seen[f.Name] || f.Size < 0 || f.Checksum == "" {
			return fmt.Errorf("%w: manifest entry for %q: size %d, checksum %q", ErrSnapshotCorrupt, f.Name, f.Size, f.Checksum)
		}
		seen[f.Name] = true
	}
	for _, name := range []string{StateFile, MemoryFile} {
		if !seen[name] {
			return fmt.Errorf("%w: manifest does not list %s", ErrSnapshotCorrupt, name)
		}
	}
	if f, _ := m.File(MemoryFile); uint64(f.Size) != m.MemoryBytes {
		return fmt.Errorf("%w: memory file of %d bytes for %d bytes of RAM", ErrSnapshotCorrupt, f.Size, m.MemoryBytes)
	}
	return nil
}

// decodeStrict refuses unknown fields and trailing data: either means the
// file is not what this build wrote.
func decodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}

// State is everything of a paused machine except its RAM.
type State struct {
	VCPUs   []VCPU  `json:"vcpus"`
	VM      VM      `json:"vm"`
	Devices Devices `json:"devices"`
}

// VCPU is one vCPU's architectural state as KVM reports it.
type VCPU struct {
	ID    int       `json:"id"`
	Regs  kvm.Regs  `json:"regs"`
	Sregs kvm.Sregs `json:"sregs"`
	FPU   kvm.FPU   `json:"fpu"`
	// XSave and XCRs are nil on a host without KVM_CAP_XSAVE/XCRS.
	XSave     *kvm.XSave        `json:"xsave,omitempty"`
	XCRs      *kvm.XCRs         `json:"xcrs,omitempty"`
	LAPIC     kvm.LAPICState    `json:"lapic"`
	MSRs      []kvm.MSREntry    `json:"msrs"`
	MPState   kvm.MPState       `json:"mp_state"`
	Events    kvm.VCPUEvents    `json:"events"`
	DebugRegs kvm.DebugRegs     `json:"debug_regs"`
	CPUID     []kvm.CPUIDEntry2 `json:"cpuid"`
	TSCKHz    uint32            `json:"tsc_khz"`
}

// VM is the in-kernel devices and the clock.
type VM struct {
	PICMaster kvm.IRQChip   `json:"pic_master"`
	PICSlave  kvm.IRQChip   `json:"pic_slave"`
	IOAPIC    kvm.IRQChip   `json:"ioapic"`
	PIT       kvm.PITState2 `json:"pit"`
	Clock     kvm.ClockData `json:"clock"`
}

// Devices is the userspace devices' state.
type Devices struct {
	Serial devices.SerialState `json:"serial"`
	I8042  devices.I8042State  `json:"i8042"`
	ACPIPM devices.ACPIPMState `json:"acpi_pm"`
	// PCI is nil for a machine without virtio devices (no bus).
	PCI    *pcibus.BusState           `json:"pci,omitempty"`
	Virtio []virtiopci.TransportState `json:"virtio,omitempty"`
}

// EncodeState is the state file's byte layout (compact JSON).
func EncodeState(s *State) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encoding snapshot state: %w", err)
	}
	return b, nil
}

// DecodeState parses and bounds-checks a state file.
func DecodeState(b []byte) (*State, error) {
	if len(b) > maxState {
		return nil, fmt.Errorf("%w: state of %d bytes", ErrSnapshotCorrupt, len(b))
	}
	var s State
	if err := decodeStrict(b, &s); err != nil {
		return nil, fmt.Errorf("%w: state: %v", ErrSnapshotCorrupt, err)
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *State) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: state: %s", ErrSnapshotCorrupt, fmt.Sprintf(format, args...))
	}
	if len(s.VCPUs) == 0 || len(s.VCPUs) > maxVCPUs {
		return bad("%d vCPUs", len(s.VCPUs))
	}
	for i, v := range s.VCPUs {
		switch {
		case v.ID != i:
			return bad("vCPU %d has id %d", i, v.ID)
		case len(v.MSRs) > maxMSRs:
			return bad("vCPU %d: %d MSRs", i, len(v.MSRs))
		case len(v.CPUID) == 0 || len(v.CPUID) > maxCPUID:
			return bad("vCPU %d: %d CPUID entries", i, len(v.CPUID))
		case v.XSave != nil && len(v.XSave.Extra) > maxXSaveWords:
			return bad("vCPU %d: %d extra xsave words", i, len(v.XSave.Extra))
		case v.XCRs != nil && v.XCRs.NrXCRs > kvm.MaxXCRs:
			return bad("vCPU %d: %d XCRs", i, v.XCRs.NrXCRs)
		}
	}
	for _, c := range []struct {
		chip kvm.IRQChip
		id   uint32
	}{{s.VM.PICMaster, kvm.IRQChipPICMaster}, {s.VM.PICSlave, kvm.IRQChipPICSlave}, {s.VM.IOAPIC, kvm.IRQChipIOAPIC}} {
		if c.chip.ChipID != c.id {
			return bad("irqchip %d saved as chip %d", c.id, c.chip.ChipID)
		}
	}
	if len(s.Devices.Serial.RX) > 4096 {
		return bad("%d serial input bytes", len(s.Devices.Serial.RX))
	}
	if s.Devices.PCI == nil && len(s.Devices.Virtio) > 0 {
		return bad("%d virtio devices without a PCI bus", len(s.Devices.Virtio))
	}
	for i, v := range s.Devices.Virtio {
		if len(v.Queues) == 0 || len(v.Queues) > virtiopci.MaxQueues {
			return bad("virtio device %d with %d queues", i, len(v.Queues))
		}
		if len(v.MSIX.Table) > 16*pcibus.MaxMSIXVectors || len(v.MSIX.PBA) > pcibus.MaxMSIXVectors/64 {
			return bad("virtio device %d: MSI-X table of %d bytes", i, len(v.MSIX.Table))
		}
	}
	return nil
}
