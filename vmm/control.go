package vmm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"kvmstack/vmm/kvm"
)

// ErrPowerButtonIgnored is returned by Shutdown when the guest has not
// enabled the ACPI power button event: it is still booting, or its kernel
// has no ACPI button driver. The press is latched, but Linux clears
// latched events when its driver starts, so nothing will happen.
var ErrPowerButtonIgnored = errors.New("the guest has not enabled the ACPI power button (still booting, or no button driver)")

// vcpuGate parks vCPU threads for a pause. Pause sets paused and kicks
// every vCPU under mu; a vCPU whose KVM_RUN returns EINTR parks in park
// until Resume or Stop. Kicking and clearing immediate_exit both happen
// under mu, so a kick is never lost to a vCPU leaving the gate.
type vcpuGate struct {
	mu      sync.Mutex
	cond    *sync.Cond
	paused  bool
	stopped bool
	parked  int
}

func newVCPUGate() *vcpuGate {
	g := &vcpuGate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// immediateExiter is what park needs of a vCPU; *kvm.VCPU implements it.
type immediateExiter interface {
	SetImmediateExit(bool)
}

// request marks the gate paused and kicks every vCPU out of KVM_RUN with
// kick (which sets immediate_exit and signals the thread).
func (g *vcpuGate) request(kick func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.paused = true
	return kick()
}

// kickAll kicks every vCPU of the machine.
func (m *Machine) kickAll() error {
	var errs []error
	for _, v := range m.vcpus {
		errs = append(errs, v.Kick())
	}
	return errors.Join(errs...)
}

// wait returns once n vCPUs are parked, the machine stopped, or ctx ended.
func (g *vcpuGate) wait(ctx context.Context, n int) error {
	stop := context.AfterFunc(ctx, func() {
		g.mu.Lock()
		g.cond.Broadcast()
		g.mu.Unlock()
	})
	defer stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.parked < n && !g.stopped && ctx.Err() == nil {
		g.cond.Wait()
	}
	switch {
	case g.stopped:
		return &TransitionError{Op: OpPause, From: StateStopped}
	case g.parked < n:
		return fmt.Errorf("pause: %d of %d vCPUs parked: %w", g.parked, n, ctx.Err())
	}
	return nil
}

// release lets parked vCPUs run again.
func (g *vcpuGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.paused = false
	g.cond.Broadcast()
}

// stop wakes parked vCPUs for good; they return from park and see the
// machine stopped.
func (g *vcpuGate) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	g.cond.Broadcast()
}

// park is called by a vCPU thread after KVM_RUN returned EINTR. While a
// pause is requested it waits; then it clears immediate_exit (set by the
// pause's kick), unless the machine stopped, whose kick must stay. KVM_RUN
// returns EINTR only after finishing an exit's I/O: a vCPU parks with its
// state complete, so a snapshot of a paused machine is consistent.
func (g *vcpuGate) park(v immediateExiter) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paused && !g.stopped {
		g.parked++
		g.cond.Broadcast()
		for g.paused && !g.stopped {
			g.cond.Wait()
		}
		g.parked--
	}
	if !g.stopped {
		v.SetImmediateExit(false)
	}
}

// State is the machine's lifecycle state.
func (m *Machine) State() State { return m.life.State() }

// Pause stops the guest: every vCPU leaves KVM_RUN (kicked, finishing the
// exit it was in) and parks; then every virtio device's workers stop
// between requests with nothing in flight, and serial input is held. The
// guest's kvmclock is saved and set back at Resume, so guest time does
// not advance over the pause. ctx bounds the wait for the vCPUs; if it ends first,
// the machine keeps running. Pausing needs StateRunning.
func (m *Machine) Pause(ctx context.Context) error {
	m.ctlMu.Lock()
	defer m.ctlMu.Unlock()
	if err := m.life.Check(OpPause); err != nil {
		return err
	}
	start := time.Now()
	if err := m.gate.request(m.kickAll); err != nil {
		m.gate.release()
		return fmt.Errorf("pause: %w", err)
	}
	if err := m.gate.wait(ctx, len(m.vcpus)); err != nil {
		m.gate.release()
		return err
	}
	// The guest's kvmclock would run on through the pause (it follows
	// the host's clock); saving it here and setting it back at resume
	// makes the pause invisible to guest time, as QEMU does.
	clock, err := m.vm.GetClock()
	if err != nil {
		m.gate.release()
		return fmt.Errorf("pause: %w", err)
	}
	select {
	case m.inputHold <- struct{}{}:
	case <-ctx.Done():
		m.gate.release()
		return fmt.Errorf("pause: serial input: %w", ctx.Err())
	}
	m.pausedClock = &clock
	var errs []error
	for _, f := range m.virtio {
		errs = append(errs, f.transport.Pause())
	}
	if err := errors.Join(errs...); err != nil {
		m.resumeLocked()
		return fmt.Errorf("pause: %w", err)
	}
	if _, err := m.life.Apply(OpPause); err != nil {
		// Stopped meanwhile: the run is over, nothing to undo.
		return err
	}
	m.log.Info("paused", "took", time.Since(start))
	return nil
}

// Resume lets a paused guest run on from exactly where it stopped:
// devices first, so the vCPUs find them serving.
func (m *Machine) Resume() error {
	m.ctlMu.Lock()
	defer m.ctlMu.Unlock()
	if _, err := m.life.Apply(OpResume); err != nil {
		return err
	}
	if err := m.resumeLocked(); err != nil {
		m.Stop(OutcomeError, err)
		return err
	}
	m.log.Info("resumed")
	return nil
}

func (m *Machine) resumeLocked() error {
	var errs []error
	if c := m.pausedClock; c != nil {
		m.pausedClock = nil
		if err := m.vm.SetClock(kvm.ClockData{Clock: c.Clock}); err != nil {
			errs = append(errs, fmt.Errorf("resume: %w", err))
		}
	}
	for _, f := range m.virtio {
		errs = append(errs, f.transport.Resume())
	}
	select {
	case <-m.inputHold:
	default:
	}
	m.gate.release()
	return errors.Join(errs...)
}

// Shutdown presses the ACPI power button: PWRBTN_STS and the SCI. The
// guest's ACPI button driver turns it into an orderly power-off, and Run
// ends with OutcomePowerOff when the guest writes S5. It returns at once;
// ErrPowerButtonIgnored means the guest is not listening (yet). Needs
// StateRunning.
func (m *Machine) Shutdown() error {
	m.ctlMu.Lock()
	defer m.ctlMu.Unlock()
	if err := m.life.Check(OpShutdown); err != nil {
		return err
	}
	if !m.acpiPM.PressPowerButton() {
		return ErrPowerButtonIgnored
	}
	m.log.Info("ACPI power button pressed")
	return nil
}

// Kill stops the machine now, in any state: Run returns OutcomeStopped
// (unless the guest ended first). The guest gets no chance to shut down.
func (m *Machine) Kill() { m.Stop(OutcomeStopped, nil) }

// ConfigInfo is the machine's configuration as Info reports it: what
// Config says, with the effective command line, minus the host-side
// streams.
type ConfigInfo struct {
	Kernel      string       `json:"kernel"`
	Initrd      string       `json:"initrd,omitempty"`
	Cmdline     string       `json:"cmdline"`
	CPUs        int          `json:"vcpus"`
	MemoryBytes uint64       `json:"memory_bytes"`
	PreferPVH   bool         `json:"prefer_pvh,omitempty"`
	Disks       []DiskConfig `json:"disks,omitempty"`
	Nets        []NetConfig  `json:"nets,omitempty"`
	RNG         bool         `json:"rng,omitempty"`
}

// Info describes the machine for the API's GET /vm.
type Info struct {
	State  State      `json:"state"`
	Config ConfigInfo `json:"config"`
	// Uptime is the time since Run started (frozen once stopped),
	// paused time included.
	Uptime      time.Duration `json:"uptime_ns"`
	VCPUs       int           `json:"vcpus"`
	MemoryBytes uint64        `json:"memory_bytes"`
	// Outcome is how the run ended; empty until it did.
	Outcome string `json:"outcome,omitempty"`
}

// Info reports the machine's state and configuration.
func (m *Machine) Info() Info {
	c := m.cfg
	info := Info{
		State: m.life.State(),
		Config: ConfigInfo{
			Kernel: c.Kernel, Initrd: c.Initrd, Cmdline: m.cmdline, CPUs: c.CPUs, MemoryBytes: c.MemoryBytes,
			PreferPVH: c.PreferPVH, Disks: c.Disks, Nets: c.Nets, RNG: c.RNG,
		},
		VCPUs:       c.CPUs,
		MemoryBytes: c.MemoryBytes,
	}
	m.stopMu.Lock()
	started, ended, outcome := m.startedAt, m.endedAt, m.outcome
	m.stopMu.Unlock()
	if !started.IsZero() {
		if ended.IsZero() {
			ended = time.Now()
		}
		info.Uptime = ended.Sub(started)
	}
	if outcome != OutcomeNone {
		info.Outcome = outcome.String()
	}
	return info
}

// DeviceMetrics is one virtio device's work.
type DeviceMetrics struct {
	// ID names the device: its type and index among devices of that
	// type, in configuration order ("block0", "net1", "rng0").
	ID string `json:"id"`
	// Type is "block", "net" or "rng".
	Type string `json:"type"`
	// Ops counts completed requests: virtqueue chains (a block request,
	// a transmitted packet, a receive buffer, an entropy request).
	Ops uint64 `json:"ops"`
	// ReadBytes and WriteBytes are the bytes the device took from and
	// gave to the guest (virtio headers included): a block write is
	// read, a block read is written, tx is read and rx written.
	ReadBytes  uint64 `json:"read_bytes"`
	WriteBytes uint64 `json:"write_bytes"`
	// Errors counts guest misuse (device broken) and failed interrupts.
	Errors uint64 `json:"errors"`
	// Notifications and Interrupts count driver kicks and interrupts
	// raised.
	Notifications uint64 `json:"notifications"`
	Interrupts    uint64 `json:"interrupts"`
}

// VCPUMetrics is one vCPU's time.
type VCPUMetrics struct {
	ID int `json:"id"`
	// RunTime is the time spent in KVM_RUN (running the guest or halted
	// in the kernel), excluding exits handled in vmm.
	RunTime time.Duration `json:"run_time_ns"`
}

// Metrics is a point-in-time reading of the machine's counters.
type Metrics struct {
	// Exits counts vCPU exits handled, by reason: io, mmio,
	// io_unhandled, mmio_unhandled, int3_fixup, interrupted (a kick or
	// a signal), other.
	Exits   map[string]uint64 `json:"exits"`
	Devices []DeviceMetrics   `json:"devices"`
	VCPUs   []VCPUMetrics     `json:"vcpus"`
}

// Metrics reads the counters; safe from any goroutine at any time.
func (m *Machine) Metrics() Metrics {
	mt := Metrics{Exits: m.ExitCounts()}
	seen := map[string]int{}
	for _, f := range m.virtio {
		typ := f.dev.Type().String()
		st := f.transport.Stats()
		mt.Devices = append(mt.Devices, DeviceMetrics{
			ID: fmt.Sprintf("%s%d", typ, seen[typ]), Type: typ,
			Ops: st.Queues.Chains, ReadBytes: st.Queues.DeviceRead, WriteBytes: st.Queues.DeviceWritten,
			Errors: st.Errors, Notifications: st.Notifications, Interrupts: st.Interrupts,
		})
		seen[typ]++
	}
	for i := range m.runTime {
		mt.VCPUs = append(mt.VCPUs, VCPUMetrics{ID: i, RunTime: time.Duration(m.runTime[i].Load())})
	}
	return mt
}
