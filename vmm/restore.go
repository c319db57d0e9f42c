package vmm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"kvmstack/vmm/kvm"
	"kvmstack/vmm/memory"
	"kvmstack/vmm/snapshot"
)

// RestoreOptions are what a restored machine takes from the new process
// rather than from the snapshot.
type RestoreOptions struct {
	// Serial receives COM1 output; nil discards it.
	Serial io.Writer
	// SerialInput, if set, is fed to COM1's receiver.
	SerialInput io.Reader
	// KVMPath is the KVM device; empty means /dev/kvm.
	KVMPath string
	// SkipMemoryChecksum checks only the memory file's size, not its
	// checksum (see snapshot.OpenOptions).
	SkipMemoryChecksum bool
}

// Restore rebuilds the machine saved in dir: the same memory layout and
// devices (disk images and TAPs re-opened by the paths and names in the
// saved configuration), RAM mapped privately from the snapshot's memory
// file (pages load on first touch, so restoring does not read all of RAM;
// the file must stay unchanged while the machine lives), and every vCPU,
// in-kernel and device state set back. The machine is returned paused:
// call Run, which starts with every vCPU parked, then Resume.
//
// A snapshot this build cannot read fails with an error wrapping
// ErrSnapshotVersion; a damaged one, or one whose state does not fit its
// own configuration, with ErrSnapshotCorrupt.
func Restore(ctx context.Context, dir string, log *slog.Logger, opts RestoreOptions) (_ *Machine, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	// The memory checksum (reading every non-zero page once) is the
	// longest step: it runs while the machine is built, and Restore
	// returns only once it passed. Nothing runs the guest before that.
	snap, err := snapshot.Open(ctx, dir, snapshot.OpenOptions{SkipMemoryChecksum: true})
	if err != nil {
		return nil, err
	}
	verifyCtx, cancelVerify := context.WithCancel(ctx)
	defer cancelVerify()
	verified := make(chan error, 1)
	if opts.SkipMemoryChecksum {
		verified <- nil
	} else {
		go func() { verified <- snap.VerifyMemory(verifyCtx) }()
	}
	opened := time.Now()
	var sc savedConfig
	d := json.NewDecoder(bytes.NewReader(snap.Manifest.Config))
	d.DisallowUnknownFields()
	if err := d.Decode(&sc); err != nil {
		return nil, fmt.Errorf("%w: saved configuration: %v", ErrSnapshotCorrupt, err)
	}
	cfg := sc.config()
	cfg.Serial, cfg.SerialInput, cfg.KVMPath = opts.Serial, opts.SerialInput, opts.KVMPath
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: saved configuration: %w", ErrSnapshotCorrupt, err)
	}
	if len(snap.State.VCPUs) != cfg.CPUs || snap.Manifest.MemoryBytes != cfg.MemoryBytes {
		return nil, fmt.Errorf("%w: %d vCPUs and %d bytes of RAM saved for a machine of %d and %d",
			ErrSnapshotCorrupt, len(snap.State.VCPUs), snap.Manifest.MemoryBytes, cfg.CPUs, cfg.MemoryBytes)
	}
	if n, want := len(snap.State.Devices.Virtio), len(cfg.Disks)+len(cfg.Nets)+btoi(cfg.RNG); n != want {
		return nil, fmt.Errorf("%w: %d virtio devices saved for a machine with %d", ErrSnapshotCorrupt, n, want)
	}

	m := newMachine(cfg, log)
	defer func() {
		if err != nil {
			if cerr := m.Close(); cerr != nil {
				log.Warn("releasing a half-restored machine", "err", cerr)
			}
		}
	}()
	if err := m.openVM(); err != nil {
		return nil, err
	}
	if m.mem, err = mapMemoryFile(snap.MemoryPath(), cfg.MemoryBytes); err != nil {
		return nil, err
	}
	for i, r := range m.mem.Regions() {
		if err := m.vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{
			Slot: uint32(i), GuestPhysAddr: uint64(r.Start), MemorySize: r.Size(), UserspaceAddr: uint64(r.HostAddr()),
		}); err != nil {
			return nil, err
		}
	}
	if err := m.setupDevices(); err != nil {
		return nil, err
	}
	if err := m.setupPCI(); err != nil {
		return nil, err
	}
	m.cmdline = sc.GuestCmdline
	built := time.Now()
	if err := m.applyState(snap.State); err != nil {
		return nil, err
	}
	applied := time.Now()
	if err := <-verified; err != nil {
		return nil, err
	}
	if err := m.markRestored(); err != nil {
		return nil, err
	}
	log.Info("machine restored", "dir", dir, "cpus", cfg.CPUs, "memory_mib", cfg.MemoryBytes>>20,
		"vmm_version", snap.Manifest.VMMVersion, "took", time.Since(start),
		"open", opened.Sub(start), "build", built.Sub(opened), "set_state", applied.Sub(built), "verify_wait", time.Since(applied))
	return m, nil
}

// mapMemoryFile maps the snapshot's RAM privately (memory.NewFromFile).
// The mapping keeps the file referenced after the descriptor is closed.
func mapMemoryFile(path string, size uint64) (*memory.Memory, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
	}
	mem, err := memory.NewFromFile(f, size)
	return mem, errors.Join(err, f.Close())
}

// applyState sets a freshly built machine to st. Order matters: the
// interrupt controllers and PIT before any LAPIC; per vCPU, sregs (APIC
// base) before the LAPIC and the LAPIC before the MSRs (TSC deadline),
// events last; devices after the vCPUs, so that an interrupt a restarted
// device raises lands in a restored LAPIC; the clock at the very end.
func (m *Machine) applyState(st *snapshot.State) error {
	for _, c := range []kvm.IRQChip{st.VM.PICMaster, st.VM.PICSlave, st.VM.IOAPIC} {
		if err := m.vm.SetIRQChip(c); err != nil {
			return err
		}
	}
	if err := m.vm.SetPIT2(st.VM.PIT); err != nil {
		return err
	}
	for _, vs := range st.VCPUs {
		v, err := m.vm.CreateVCPU(vs.ID)
		if err != nil {
			return err
		}
		m.vcpus = append(m.vcpus, v)
		if err := restoreVCPU(v, vs); err != nil {
			return fmt.Errorf("vCPU %d: %w", vs.ID, err)
		}
	}
	if err := m.restoreDevices(&st.Devices); err != nil {
		return fmt.Errorf("%w: %w", ErrSnapshotCorrupt, err)
	}
	// The clock as it was: the guest sees no time pass while it was
	// saved (no KVM_CLOCK_REALTIME adjustment). Resume sets it again, as
	// after any pause, so the time until then does not count either.
	clock := kvm.ClockData{Clock: st.VM.Clock.Clock}
	m.pausedClock = &clock
	return m.vm.SetClock(clock)
}

func restoreVCPU(v *kvm.VCPU, s snapshot.VCPU) error {
	if err := v.SetCPUID2(s.CPUID); err != nil {
		return err
	}
	if s.TSCKHz != 0 {
		khz, err := v.TSCKHz()
		if err != nil {
			return err
		}
		if khz != s.TSCKHz {
			// Another host's TSC rate: scale it, or the guest's clock runs
			// at the wrong speed.
			if err := v.SetTSCKHz(s.TSCKHz); err != nil {
				return fmt.Errorf("guest TSC at %d kHz on a host at %d kHz: %w", s.TSCKHz, khz, err)
			}
		}
	}
	if err := v.SetMPState(s.MPState); err != nil {
		return err
	}
	if err := v.SetRegs(s.Regs); err != nil {
		return err
	}
	if err := v.SetSregs(s.Sregs); err != nil {
		return err
	}
	if err := v.SetFPU(s.FPU); err != nil {
		return err
	}
	if s.XSave != nil {
		if err := v.SetXSave(s.XSave); err != nil {
			return err
		}
	}
	if s.XCRs != nil {
		if err := v.SetXCRS(*s.XCRs); err != nil {
			return err
		}
	}
	if err := v.SetDebugRegs(s.DebugRegs); err != nil {
		return err
	}
	if err := v.SetLAPIC(s.LAPIC); err != nil {
		return err
	}
	if err := v.SetMSRs(s.MSRs); err != nil {
		return err
	}
	ev := s.Events
	// GET reports which optional fields it filled; the SIPI vector is
	// always filled but not flagged.
	ev.Flags |= kvm.VCPUEventValidNMIPending | kvm.VCPUEventValidSIPIVector
	return v.SetVCPUEvents(ev)
}

func (m *Machine) restoreDevices(d *snapshot.Devices) error {
	kbd, pm, err := m.legacyDevices()
	if err != nil {
		return err
	}
	if err := m.serial.SetState(d.Serial); err != nil {
		return err
	}
	kbd.SetState(d.I8042)
	pm.SetState(d.ACPIPM)
	if (m.pci == nil) != (d.PCI == nil) {
		return fmt.Errorf("PCI bus present %v, saved %v", m.pci != nil, d.PCI != nil)
	}
	if m.pci == nil {
		return nil
	}
	if err := m.pci.SetState(*d.PCI); err != nil {
		return err
	}
	for i, f := range m.virtio {
		if err := f.transport.SetState(d.Virtio[i]); err != nil {
			return fmt.Errorf("virtio device %d: %w", i, err)
		}
	}
	return nil
}
