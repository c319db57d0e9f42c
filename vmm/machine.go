package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"kvmstack/firmware"
	"kvmstack/vmm/arch/x86"
	"kvmstack/vmm/arch/x86/acpi"
	"kvmstack/vmm/devices"
	pcibus "kvmstack/vmm/devices/pci"
	"kvmstack/vmm/kvm"
	"kvmstack/vmm/memory"
)

// KVM needs three pages for the TSS and one for the identity map of real
// mode on Intel; both sit just below the BIOS area at the top of the 32-bit
// hole, away from the LAPIC, the IOAPIC and the PCI window.
const (
	tssAddr         = 0xfffb_d000
	identityMapAddr = 0xfffb_c000
)

// Machine is one guest, built and ready to run.
type Machine struct {
	cfg     Config
	log     *slog.Logger
	profile x86.HostProfile
	sys     *kvm.System
	vm      *kvm.VM
	mem     *memory.Memory
	vcpus   []*kvm.VCPU
	kernel  *firmware.Kernel
	cmdline string
	pio     *devices.Bus
	mmio    *devices.Bus
	serial  *devices.Serial
	stats   exitStats
	pci     *pcibus.Bus
	gsi     *pcibus.GSIRouter
	virtio  []pciFunction
	acpiPM  *devices.ACPIPM

	// life is the lifecycle state machine; ctlMu serialises the control
	// operations (Pause, Resume, Shutdown, snapshots) that move it.
	life  *Lifecycle
	ctlMu sync.Mutex
	// gate parks the vCPUs while paused.
	gate *vcpuGate
	// inputHold is held (a value in it) while paused, and by the serial
	// input pump around each delivery, so no input reaches a paused
	// guest's UART.
	inputHold chan struct{}
	// runTime[i] is vCPU i's time in KVM_RUN, in nanoseconds.
	runTime []atomic.Int64
	// pausedClock is the guest's kvmclock when Pause stopped it; guarded
	// by ctlMu.
	pausedClock *kvm.ClockData

	stopOnce  sync.Once
	stopMu    sync.Mutex
	outcome   Outcome
	stopErr   error
	startedAt time.Time
	endedAt   time.Time
	stopped   chan struct{}
	// started is closed by Run once the machine is running (or, when
	// restored, parked and ready for Resume).
	started chan struct{}
}

// New builds a machine from cfg: it opens KVM, maps guest RAM, loads the
// kernel, initrd and boot tables and sets every vCPU's entry state. Close
// releases it.
func New(cfg Config, log *slog.Logger) (_ *Machine, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := newMachine(cfg, log)
	defer func() {
		if err != nil {
			if cerr := m.Close(); cerr != nil {
				log.Warn("releasing a half-built machine", "err", cerr)
			}
		}
	}()
	if err := m.openVM(); err != nil {
		return nil, err
	}
	if m.mem, err = memory.New(cfg.MemoryBytes); err != nil {
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
	if err := m.loadGuest(); err != nil {
		return nil, err
	}
	if err := m.setupVCPUs(); err != nil {
		return nil, err
	}
	// Loading read whole files (and maybe a decompressed kernel) through
	// the heap; hand that back now rather than carry it for the guest's
	// lifetime.
	debug.FreeOSMemory()
	log.Info("machine ready", "kernel", cfg.Kernel, "format", m.kernel.Format, "entry", m.kernel.Mode.String(),
		"cpus", cfg.CPUs, "memory_mib", cfg.MemoryBytes>>20, "emulating_host", m.profile.Emulating, "cmdline", m.cmdline)
	return m, nil
}

// newMachine is a machine with nothing built yet, in StateCreated; New and
// Restore fill it in.
func newMachine(cfg Config, log *slog.Logger) *Machine {
	return &Machine{cfg: cfg, log: log, stopped: make(chan struct{}), started: make(chan struct{}), life: NewLifecycle(StateCreated), gate: newVCPUGate(),
		inputHold: make(chan struct{}, 1), runTime: make([]atomic.Int64, cfg.CPUs)}
}

// markRestored puts a machine built from a snapshot in StatePaused before
// its first Run, which then starts every vCPU parked until Resume.
func (m *Machine) markRestored() error {
	_, err := m.life.Apply(OpRestore)
	return err
}

// checkHost refuses a KVM that lacks what vmm cannot do without, naming it.
func (m *Machine) checkHost() error {
	v, err := m.sys.APIVersion()
	if err != nil {
		return err
	}
	if v != 12 {
		return fmt.Errorf("KVM API version %d, want 12", v)
	}
	for _, c := range []struct {
		cap  kvm.Cap
		name string
	}{
		{kvm.CapIRQChip, "KVM_CAP_IRQCHIP"}, {kvm.CapUserMemory, "KVM_CAP_USER_MEMORY"},
		{kvm.CapSetTSSAddr, "KVM_CAP_SET_TSS_ADDR"}, {kvm.CapExtCPUID, "KVM_CAP_EXT_CPUID"},
		{kvm.CapPIT2, "KVM_CAP_PIT2"}, {kvm.CapIRQRouting, "KVM_CAP_IRQ_ROUTING"},
	} {
		n, err := m.sys.CheckExtension(c.cap)
		if err != nil {
			return err
		}
		if n <= 0 {
			return fmt.Errorf("host KVM lacks %s", c.name)
		}
	}
	if n, err := m.sys.CheckExtension(kvm.CapTSCDeadlineTimer); err == nil && n > 0 {
		m.profile.TSCDeadline = true
	}
	if !m.profile.Emulating {
		// Some nested KVMs (kvm-amd under QEMU's TCG) drop the guest's
		// xsetbv: a guest using XSAVE there would lose register state.
		ok, err := x86.ProbeXSETBV(m.sys)
		if err != nil {
			return fmt.Errorf("probing xsetbv: %w", err)
		}
		if !ok {
			m.profile.BrokenXSETBV = true
			m.log.Info("host KVM drops guest xsetbv; hiding XSAVE from the guest")
		}
	}
	return nil
}

// openVM detects the host's kind of KVM, opens it, checks it has what vmm
// needs, and creates and sets up the VM: the first steps of both New and
// Restore.
func (m *Machine) openVM() error {
	var err error
	if m.profile, err = x86.DetectHostProfile(); err != nil {
		return fmt.Errorf("host profile: %w", err)
	}
	path := m.cfg.KVMPath
	if path == "" {
		path = "/dev/kvm"
	}
	if m.sys, err = kvm.Open(path); err != nil {
		return err
	}
	if err := m.checkHost(); err != nil {
		return err
	}
	if m.vm, err = m.sys.CreateVM(); err != nil {
		return err
	}
	return m.setupVM()
}

func (m *Machine) setupVM() error {
	if err := m.vm.SetIdentityMapAddr(identityMapAddr); err != nil {
		return err
	}
	if err := m.vm.SetTSSAddr(tssAddr); err != nil {
		return err
	}
	if err := m.vm.CreateIRQChip(); err != nil {
		return err
	}
	return m.vm.CreatePIT2(kvm.PITConfig{Flags: kvm.PITSpeakerDummy})
}

// setupDevices wires the legacy devices to the port bus; their callbacks
// end the run with the matching outcome.
func (m *Machine) setupDevices() error {
	m.pio = devices.NewBus("pio")
	m.mmio = devices.NewBus("mmio")
	out := m.cfg.Serial
	if out == nil {
		out = io.Discard
	}
	m.serial = devices.NewSerial(out, func() {
		// ISA interrupts are edge-triggered: pulse the line.
		if err := m.vm.IRQLine(devices.COM1IRQ, true); err != nil {
			m.Stop(OutcomeError, err)
			return
		}
		if err := m.vm.IRQLine(devices.COM1IRQ, false); err != nil {
			m.Stop(OutcomeError, err)
		}
	})
	powerOff := func() { m.Stop(OutcomePowerOff, nil) }
	reset := func() { m.Stop(OutcomeReset, nil) }
	m.acpiPM = devices.NewACPIPM(x86.S5SleepType, x86.ResetValue, powerOff, reset)
	m.acpiPM.SetSCI(func(level bool) {
		// Level-triggered (the MADT override says so): KVM's IOAPIC
		// re-delivers after EOI while the line stays high.
		if err := m.vm.IRQLine(uint32(x86.SCIIRQ), level); err != nil {
			m.Stop(OutcomeError, fmt.Errorf("ACPI SCI: %w", err))
		}
	})
	regs := []struct {
		base, size uint64
		dev        devices.Device
	}{
		{devices.COM1Base, devices.SerialPorts, m.serial},
		{devices.I8042Base, devices.I8042Ports, devices.NewI8042(reset)},
		{uint64(x86.SleepControlPort), devices.ACPIPMPorts, m.acpiPM},
		{uint64(x86.PVPanicPort), 1, devices.NewPVPanic(func() { m.Stop(OutcomeCrash, errors.New("guest kernel panicked (pvpanic)")) })},
		{0x80, 1, devices.Sink{}},
	}
	for _, r := range regs {
		if err := m.pio.Register(r.base, r.size, r.dev); err != nil {
			return err
		}
	}
	return nil
}

// loadGuest places the kernel, initrd, ACPI tables, boot structures and
// the command line in guest RAM.
func (m *Machine) loadGuest() error {
	var err error
	m.kernel, err = firmware.LoadKernel(m.mem, m.cfg.Kernel, firmware.LoadOptions{
		// Entering the decompressed payload directly saves the guest's
		// own decompressor, which runs emulated (minutes) on kvm_pvm and
		// still costs time on hardware.
		DecompressBzImage: true,
		PreferPVH:         m.cfg.PreferPVH,
	})
	if err != nil {
		return err
	}
	bp := firmware.BootParams{Kernel: m.kernel, E820: x86.E820(m.mem.Ranges())}
	if m.cfg.Initrd != "" {
		if bp.InitrdAddr, bp.InitrdSize, err = firmware.LoadInitrd(m.mem, m.cfg.Initrd, m.kernel); err != nil {
			return err
		}
	}
	if bp.RSDP, err = acpi.Write(m.mem, acpi.DefaultConfig(m.cfg.CPUs)); err != nil {
		return fmt.Errorf("ACPI tables: %w", err)
	}
	m.cmdline = m.cfg.Cmdline
	if m.cmdline == "" {
		m.cmdline = DefaultCmdline
	}
	if extra := m.profile.CmdlineExtras(); extra != "" {
		m.cmdline = strings.TrimSpace(m.cmdline + " " + extra)
	}
	bp.Cmdline = m.cmdline
	if err := x86.WriteGDT(m.mem); err != nil {
		return err
	}
	if m.kernel.Mode == firmware.EntryPVH {
		return firmware.WritePVHStartInfo(m.mem, bp)
	}
	if err := x86.WritePageTables(m.mem); err != nil {
		return err
	}
	return firmware.WriteBootParams(m.mem, bp)
}

// setupVCPUs creates the vCPUs with their CPUID, MSRs and LAPIC wiring;
// vCPU 0 also gets the entry state. With the in-kernel LAPIC the others
// wait for INIT/SIPI from the guest, as on real hardware.
func (m *Machine) setupVCPUs() error {
	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	msrIndex, err := m.sys.MSRIndexList()
	if err != nil {
		return err
	}
	for id := 0; id < m.cfg.CPUs; id++ {
		v, err := m.vm.CreateVCPU(id)
		if err != nil {
			return err
		}
		m.vcpus = append(m.vcpus, v)
		if err := v.SetCPUID2(x86.ShapeCPUID(supported, x86.Topology{APICID: id, CPUs: m.cfg.CPUs}, m.profile)); err != nil {
			return err
		}
		if err := v.SetMSRs(x86.BootMSRs(msrIndex)); err != nil {
			return err
		}
		lapic, err := v.GetLAPIC()
		if err != nil {
			return err
		}
		x86.SetLocalInterrupts(&lapic)
		if err := v.SetLAPIC(lapic); err != nil {
			return err
		}
		if id == 0 {
			if err := m.setEntryState(v); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *Machine) setEntryState(v *kvm.VCPU) error {
	sregs, err := v.GetSregs()
	if err != nil {
		return err
	}
	var regs kvm.Regs
	switch m.kernel.Mode {
	case firmware.EntryPVH:
		x86.ProtectedModeSregs(&sregs)
		regs = x86.PVHRegs(uint64(m.kernel.Entry))
	default:
		x86.LongModeSregs(&sregs)
		regs = x86.LongModeRegs(uint64(m.kernel.Entry), uint64(x86.ZeroPageAddr))
	}
	if err := v.SetSregs(sregs); err != nil {
		return err
	}
	if err := v.SetRegs(regs); err != nil {
		return err
	}
	// The x87 and SSE control words a CPU has after FNINIT / reset.
	return v.SetFPU(kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80})
}

// Started is closed once Run has started the machine: its state is
// running, or, for a restored machine, paused with every vCPU about to
// park, so that Resume may be called. It stays open if Run was never
// called or refused to start (a machine killed before Run).
func (m *Machine) Started() <-chan struct{} { return m.started }

// Cmdline is the kernel command line the guest was given.
func (m *Machine) Cmdline() string { return m.cmdline }

// Memory is the guest's RAM.
func (m *Machine) Memory() *memory.Memory { return m.mem }

// Stop ends the run with outcome; the first call wins. Safe from any
// goroutine, including device callbacks on vCPU threads.
func (m *Machine) Stop(outcome Outcome, err error) {
	m.stopOnce.Do(func() {
		if _, lerr := m.life.Apply(OpStop); lerr != nil {
			m.log.Debug("stop", "err", lerr)
		}
		m.stopMu.Lock()
		m.outcome, m.stopErr = outcome, err
		m.endedAt = time.Now()
		m.stopMu.Unlock()
		close(m.stopped)
		m.gate.stop()
		for _, v := range m.vcpus {
			if kerr := v.Kick(); kerr != nil {
				m.log.Error("kick vCPU", "vcpu", v.ID(), "err", kerr)
			}
		}
	})
}

// Run runs the guest until it stops itself, Stop is called, or ctx ends
// (then the outcome is OutcomeStopped). The error is set for OutcomeError
// and, with detail, for OutcomeCrash. A machine in StatePaused (restored
// from a snapshot) starts with its vCPUs parked until Resume. Run may be
// called once; a machine killed before it returns at once.
func (m *Machine) Run(ctx context.Context) (Outcome, error) {
	if from, err := m.life.Apply(OpStart); err != nil {
		if from == StateStopped {
			m.stopMu.Lock()
			defer m.stopMu.Unlock()
			return m.outcome, m.stopErr
		}
		return OutcomeError, err
	}
	m.stopMu.Lock()
	m.startedAt = time.Now()
	m.stopMu.Unlock()
	if m.life.State() == StatePaused {
		if err := m.gate.request(m.kickAll); err != nil {
			return OutcomeError, err
		}
		m.inputHold <- struct{}{}
	}
	if m.cfg.SerialInput != nil {
		go m.pumpInput(m.cfg.SerialInput)
	}
	h := &exitHandler{pio: m.pio, mmio: m.mmio, stats: &m.stats}
	close(m.started)
	var wg sync.WaitGroup
	for i, v := range m.vcpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.runVCPU(v, h, &m.runTime[i])
		}()
	}
	select {
	case <-ctx.Done():
		m.Stop(OutcomeStopped, nil)
	case <-m.stopped:
	}
	wg.Wait()
	m.stopMu.Lock()
	defer m.stopMu.Unlock()
	return m.outcome, m.stopErr
}

// runVCPU is one vCPU's thread. KVM ties a vCPU to the thread that runs
// it, and Kick signals that thread, so it stays locked for the run.
func (m *Machine) runVCPU(v *kvm.VCPU, h *exitHandler, runTime *atomic.Int64) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		select {
		case <-m.stopped:
			return
		default:
		}
		start := time.Now()
		err := v.Run()
		runTime.Add(int64(time.Since(start)))
		if errors.Is(err, kvm.ErrInterrupted) {
			// A kick (pause or stop) or a signal for the Go runtime.
			// KVM_RUN returns EINTR only with the last exit's I/O
			// complete, so this is where a vCPU may park.
			h.stats.interrupted.Add(1)
			m.gate.park(v)
			continue
		}
		if err != nil {
			m.Stop(OutcomeError, err)
			return
		}
		if v.ExitReason() == kvm.ExitIO {
			// The hot path (serial output, PCI config, ACPI ports): typed
			// decode without going through the Exit interface.
			io, err := v.IO()
			if err != nil {
				m.Stop(OutcomeError, fmt.Errorf("vCPU %d: %w", v.ID(), err))
				return
			}
			h.stats.io.Add(1)
			h.portIO(io)
			continue
		}
		exit, err := v.Exit()
		if err != nil {
			m.Stop(OutcomeError, fmt.Errorf("vCPU %d: %w", v.ID(), err))
			return
		}
		if vd := h.handle(v, exit); vd.stop {
			m.Stop(vd.outcome, vd.err)
			return
		}
	}
}

func (m *Machine) pumpInput(r io.Reader) {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			select {
			case m.inputHold <- struct{}{}:
			case <-m.stopped:
				return
			}
			m.serial.Input(buf[:n])
			<-m.inputHold
		}
		if err != nil {
			return
		}
		select {
		case <-m.stopped:
			return
		default:
		}
	}
}

// ExitCounts reports exits handled so far by kind.
func (m *Machine) ExitCounts() map[string]uint64 {
	return map[string]uint64{
		"io": m.stats.io.Load(), "mmio": m.stats.mmio.Load(), "io_unhandled": m.stats.unhandledIO.Load(),
		"mmio_unhandled": m.stats.unhandledMMIO.Load(), "int3_fixup": m.stats.int3Fixups.Load(), "other": m.stats.other.Load(),
		"interrupted": m.stats.interrupted.Load(),
	}
}

// Close releases vCPUs, the VM, guest RAM and KVM, reporting every error.
func (m *Machine) Close() error {
	// Devices first: their workers use guest RAM and the VM's fds.
	errs := []error{m.closePCI()}
	for _, v := range m.vcpus {
		errs = append(errs, v.Close())
	}
	m.vcpus = nil
	if m.vm != nil {
		errs = append(errs, m.vm.Close())
		m.vm = nil
	}
	if m.mem != nil {
		errs = append(errs, m.mem.Close())
		m.mem = nil
	}
	if m.sys != nil {
		errs = append(errs, m.sys.Close())
		m.sys = nil
	}
	return errors.Join(errs...)
}
