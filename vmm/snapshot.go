package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"kvmstack/vmm/arch/x86"
	"kvmstack/vmm/devices"
	"kvmstack/vmm/kvm"
	"kvmstack/vmm/snapshot"
)

// Snapshot errors, re-exported so callers of package vmm need not import
// the format package to branch on them.
var (
	ErrSnapshotVersion = snapshot.ErrSnapshotVersion
	ErrSnapshotCorrupt = snapshot.ErrSnapshotCorrupt
)

// savedConfig is the part of Config a snapshot keeps: everything that
// shapes the machine, nothing bound to the process (serial streams).
type savedConfig struct {
	Kernel      string       `json:"kernel"`
	Initrd      string       `json:"initrd,omitempty"`
	Cmdline     string       `json:"cmdline,omitempty"`
	CPUs        int          `json:"cpus"`
	MemoryBytes uint64       `json:"memory_bytes"`
	PreferPVH   bool         `json:"prefer_pvh,omitempty"`
	Disks       []DiskConfig `json:"disks,omitempty"`
	Nets        []NetConfig  `json:"nets,omitempty"`
	RNG         bool         `json:"rng,omitempty"`
	// GuestCmdline is the command line the guest booted with (the host
	// profile's additions included), for Machine.Cmdline after restore.
	GuestCmdline string `json:"guest_cmdline,omitempty"`
}

func saveConfig(c Config, cmdline string) savedConfig {
	return savedConfig{
		Kernel: c.Kernel, Initrd: c.Initrd, Cmdline: c.Cmdline, CPUs: c.CPUs, MemoryBytes: c.MemoryBytes,
		PreferPVH: c.PreferPVH, Disks: c.Disks, Nets: c.Nets, RNG: c.RNG, GuestCmdline: cmdline,
	}
}

func (s savedConfig) config() Config {
	return Config{
		Kernel: s.Kernel, Initrd: s.Initrd, Cmdline: s.Cmdline, CPUs: s.CPUs, MemoryBytes: s.MemoryBytes,
		PreferPVH: s.PreferPVH, Disks: s.Disks, Nets: s.Nets, RNG: s.RNG,
	}
}

// vmmVersion names the running build for the manifest.
func vmmVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			v += "+" + s.Value
		}
	}
	return v
}

// ramMappedFrom reports whether path is the file a restored machine's RAM
// is mapped from, by its device and inode in /proc/self/maps.
func (m *Machine) ramMappedFrom(path string) bool {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return false
	}
	for _, r := range m.mem.Regions() {
		if dev, ino, ok := mappingFile(maps, r.HostAddr()); ok && ino == st.Ino &&
			dev == [2]uint64{uint64(unix.Major(st.Dev)), uint64(unix.Minor(st.Dev))} {
			return true
		}
	}
	return false
}

// mappingFile finds the /proc/self/maps line covering addr and returns the
// major:minor device and inode of the file mapped there (inode 0 for
// anonymous memory).
func mappingFile(maps []byte, addr uintptr) (dev [2]uint64, ino uint64, ok bool) {
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		lo, hi, found := strings.Cut(f[0], "-")
		if !found {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || uint64(addr) < start || uint64(addr) >= end {
			continue
		}
		maj, min, found := strings.Cut(f[3], ":")
		a, err1 := strconv.ParseUint(maj, 16, 64)
		b, err2 := strconv.ParseUint(min, 16, 64)
		i, err3 := strconv.ParseUint(f[4], 10, 64)
		if !found || err1 != nil || err2 != nil || err3 != nil {
			return dev, 0, false
		}
		return [2]uint64{a, b}, i, true
	}
	return dev, 0, false
}

// Snapshot writes the paused machine to dir (see package snapshot for the
// files). The machine stays paused and can be resumed afterwards. dir must
// not be the directory this machine was restored from: its memory file
// backs the guest's RAM.
func (m *Machine) Snapshot(ctx context.Context, dir string) error {
	m.ctlMu.Lock()
	defer m.ctlMu.Unlock()
	if err := m.life.Check(OpSnapshot); err != nil {
		return err
	}
	if m.ramMappedFrom(filepath.Join(dir, snapshot.MemoryFile)) {
		// Truncating that file would pull the guest's RAM from under it.
		return fmt.Errorf("%w: snapshot into %s, the directory this machine's RAM is mapped from", ErrConfig, dir)
	}
	start := time.Now()
	st, err := m.captureState()
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	cfg, err := json.Marshal(saveConfig(m.cfg, m.cmdline))
	if err != nil {
		return fmt.Errorf("snapshot: encoding config: %w", err)
	}
	var ram [][]byte
	for _, r := range m.mem.Regions() {
		b, err := m.mem.Slice(r.Start, r.Size())
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		ram = append(ram, b)
	}
	man, err := snapshot.Write(ctx, dir, snapshot.Manifest{VMMVersion: vmmVersion(), Created: time.Now().UTC(), Config: cfg}, st, ram)
	if err != nil {
		return err
	}
	m.log.Info("snapshot written", "dir", dir, "memory_mib", man.MemoryBytes>>20, "took", time.Since(start))
	return nil
}

// captureState reads every vCPU, the in-kernel devices and the userspace
// devices. The machine must be paused: nothing may change them meanwhile.
func (m *Machine) captureState() (*snapshot.State, error) {
	st := &snapshot.State{}
	msrs, err := m.sys.MSRIndexList()
	if err != nil {
		return nil, err
	}
	saveable := saveableMSRs(msrs)
	hasXSave, err := m.sys.CheckExtension(kvm.CapXSave)
	if err != nil {
		return nil, err
	}
	hasXCRs, err := m.sys.CheckExtension(kvm.CapXCRS)
	if err != nil {
		return nil, err
	}
	for _, v := range m.vcpus {
		vs, err := captureVCPU(v, saveable, hasXSave > 0, hasXCRs > 0)
		if err != nil {
			return nil, fmt.Errorf("vCPU %d: %w", v.ID(), err)
		}
		st.VCPUs = append(st.VCPUs, vs)
	}
	for _, c := range []struct {
		id  uint32
		dst *kvm.IRQChip
	}{{kvm.IRQChipPICMaster, &st.VM.PICMaster}, {kvm.IRQChipPICSlave, &st.VM.PICSlave}, {kvm.IRQChipIOAPIC, &st.VM.IOAPIC}} {
		if *c.dst, err = m.vm.GetIRQChip(c.id); err != nil {
			return nil, err
		}
	}
	if st.VM.PIT, err = m.vm.GetPIT2(); err != nil {
		return nil, err
	}
	// The clock as Pause stopped it: kvmclock runs on in KVM while the
	// machine is paused, and Resume sets it back to that value.
	if m.pausedClock != nil {
		st.VM.Clock = *m.pausedClock
	} else if st.VM.Clock, err = m.vm.GetClock(); err != nil {
		return nil, err
	}
	if err := m.captureDevices(&st.Devices); err != nil {
		return nil, err
	}
	return st, nil
}

// saveableMSRs is KVM's MSR index list minus the MSRs that cannot be set
// back: IA32_ARCH_CAPABILITIES is read-only to a VMM on some hosts
// (DESIGN.md "KVM on this host").
func saveableMSRs(list []uint32) []uint32 {
	out := make([]uint32, 0, len(list))
	for _, i := range list {
		if i != x86.MSRIA32ArchCaps {
			out = append(out, i)
		}
	}
	return out
}

// readMSRs reads every MSR of list the vCPU has. KVM lists MSRs the host
// knows but this vCPU's CPUID may not offer; reading one stops the batch,
// so it is dropped and the rest read again.
func readMSRs(v *kvm.VCPU, list []uint32) ([]kvm.MSREntry, error) {
	entries := make([]kvm.MSREntry, len(list))
	for i, idx := range list {
		entries[i].Index = idx
	}
	for done := 0; done < len(entries); {
		err := v.GetMSRs(entries[done:])
		var me *kvm.MSRError
		if errors.As(err, &me) {
			at := done + me.Done
			entries = slices.Delete(entries, at, at+1)
			done = at
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	return entries, nil
}

func captureVCPU(v *kvm.VCPU, msrs []uint32, hasXSave, hasXCRs bool) (snapshot.VCPU, error) {
	s := snapshot.VCPU{ID: v.ID()}
	var err error
	if s.Regs, err = v.GetRegs(); err != nil {
		return s, err
	}
	if s.Sregs, err = v.GetSregs(); err != nil {
		return s, err
	}
	if s.FPU, err = v.GetFPU(); err != nil {
		return s, err
	}
	if hasXSave {
		if s.XSave, err = v.GetXSave(); err != nil {
			return s, err
		}
	}
	if hasXCRs {
		x, err := v.GetXCRS()
		if err != nil {
			return s, err
		}
		s.XCRs = &x
	}
	if s.LAPIC, err = v.GetLAPIC(); err != nil {
		return s, err
	}
	if s.MSRs, err = readMSRs(v, msrs); err != nil {
		return s, err
	}
	if s.MPState, err = v.GetMPState(); err != nil {
		return s, err
	}
	if s.Events, err = v.GetVCPUEvents(); err != nil {
		return s, err
	}
	if s.DebugRegs, err = v.GetDebugRegs(); err != nil {
		return s, err
	}
	if s.CPUID, err = v.GetCPUID2(); err != nil {
		return s, err
	}
	if s.TSCKHz, err = v.TSCKHz(); err != nil {
		return s, err
	}
	return s, nil
}

// legacyDevices finds the port devices the machine registered in
// setupDevices.
func (m *Machine) legacyDevices() (*devices.I8042, *devices.ACPIPM, error) {
	d, _ := m.pio.DeviceAt(devices.I8042Base)
	kbd, ok := d.(*devices.I8042)
	if !ok {
		return nil, nil, fmt.Errorf("no i8042 at %#x", devices.I8042Base)
	}
	d, _ = m.pio.DeviceAt(uint64(x86.SleepControlPort))
	pm, ok := d.(*devices.ACPIPM)
	if !ok {
		return nil, nil, fmt.Errorf("no ACPI PM block at %#x", uint64(x86.SleepControlPort))
	}
	return kbd, pm, nil
}

func (m *Machine) captureDevices(d *snapshot.Devices) error {
	kbd, pm, err := m.legacyDevices()
	if err != nil {
		return err
	}
	d.Serial, d.I8042, d.ACPIPM = m.serial.State(), kbd.State(), pm.State()
	if m.pci == nil {
		return nil
	}
	bus := m.pci.State()
	d.PCI = &bus
	for _, f := range m.virtio {
		ts, err := f.transport.State()
		if err != nil {
			return err
		}
		d.Virtio = append(d.Virtio, ts)
	}
	return nil
}
