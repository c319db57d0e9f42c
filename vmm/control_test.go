package vmm

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gateVCPU imitates KVM_RUN for the gate: run returns "interrupted" when
// immediate_exit is set at entry or a kick's signal arrives while it runs,
// and otherwise makes guest progress and exits after a short while.
type gateVCPU struct {
	immediate atomic.Bool
	signal    chan struct{}
	progress  atomic.Int64
	// While stuck, run blocks on hold: a vCPU stuck in a device callback.
	stuck atomic.Bool
	hold  chan struct{}
}

func newGateVCPU() *gateVCPU {
	return &gateVCPU{signal: make(chan struct{}, 1), hold: make(chan struct{})}
}

func (f *gateVCPU) SetImmediateExit(b bool) { f.immediate.Store(b) }

func (f *gateVCPU) Kick() error {
	f.immediate.Store(true)
	select {
	case f.signal <- struct{}{}:
	default:
	}
	return nil
}

func (f *gateVCPU) run() (interrupted bool) {
	if f.stuck.Load() {
		<-f.hold
	}
	if f.immediate.Load() {
		return true
	}
	select {
	case <-f.signal:
		return true
	case <-time.After(20 * time.Microsecond):
		f.progress.Add(1)
		return false
	}
}

// fakeMachine runs the vCPU loop of Machine.runVCPU over fake vCPUs.
type fakeMachine struct {
	gate    *vcpuGate
	vcpus   []*gateVCPU
	stopped chan struct{}
	wg      sync.WaitGroup
}

func startFake(t *testing.T, n int) *fakeMachine {
	fm := &fakeMachine{gate: newVCPUGate(), stopped: make(chan struct{})}
	for range n {
		v := newGateVCPU()
		fm.vcpus = append(fm.vcpus, v)
		fm.wg.Add(1)
		go func() {
			defer fm.wg.Done()
			for {
				select {
				case <-fm.stopped:
					return
				default:
				}
				if v.run() {
					fm.gate.park(v)
				}
			}
		}()
	}
	t.Cleanup(fm.stop)
	return fm
}

func (fm *fakeMachine) kickAll() error {
	for _, v := range fm.vcpus {
		if err := v.Kick(); err != nil {
			return err
		}
	}
	return nil
}

func (fm *fakeMachine) pause(ctx context.Context) error {
	if err := fm.gate.request(fm.kickAll); err != nil {
		return err
	}
	if err := fm.gate.wait(ctx, len(fm.vcpus)); err != nil {
		fm.gate.release()
		return err
	}
	return nil
}

func (fm *fakeMachine) stop() {
	select {
	case <-fm.stopped:
		return
	default:
	}
	close(fm.stopped)
	fm.gate.stop()
	for _, v := range fm.vcpus {
		_ = v.Kick()
	}
	fm.wg.Wait()
}

func (fm *fakeMachine) progress() []int64 {
	var p []int64
	for _, v := range fm.vcpus {
		p = append(p, v.progress.Load())
	}
	return p
}

func waitProgress(t *testing.T, fm *fakeMachine, since []int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for i, v := range fm.vcpus {
		for v.progress.Load() == since[i] {
			if time.Now().After(deadline) {
				t.Fatalf("vCPU %d made no progress after resume", i)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// TestGatePauseResume: while paused no vCPU makes progress, after resume
// every one does; many rounds, to catch a lost kick.
func TestGatePauseResume(t *testing.T) {
	fm := startFake(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for round := range 300 {
		if err := fm.pause(ctx); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		before := fm.progress()
		time.Sleep(200 * time.Microsecond)
		after := fm.progress()
		for i := range before {
			if before[i] != after[i] {
				t.Fatalf("round %d: vCPU %d progressed while paused (%d → %d)", round, i, before[i], after[i])
			}
			if fm.vcpus[i].immediate.Load() != true {
				t.Fatalf("round %d: vCPU %d parked without immediate_exit", round, i)
			}
		}
		fm.gate.release()
		waitProgress(t, fm, after)
		for i, v := range fm.vcpus {
			// No kick since the release: a vCPU that ran cleared it.
			if v.immediate.Load() {
				t.Fatalf("round %d: vCPU %d runs with immediate_exit set", round, i)
			}
		}
	}
}

// TestGatePauseTimeout: a vCPU that does not come back (stuck in a device
// callback) makes Pause fail when ctx ends, and the others keep running.
func TestGatePauseTimeout(t *testing.T) {
	fm := startFake(t, 2)
	fm.vcpus[1].stuck.Store(true)
	time.Sleep(time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := fm.pause(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("pause = %v, want a deadline error", err)
	}
	waitProgress(t, fm, []int64{fm.vcpus[0].progress.Load(), -1})
	fm.vcpus[1].stuck.Store(false)
	close(fm.vcpus[1].hold)
}

// TestGateStopWhilePaused: stopping wakes parked vCPUs, they exit, and a
// pause waiting on a stopped machine returns a TransitionError.
func TestGateStopWhilePaused(t *testing.T) {
	fm := startFake(t, 4)
	if err := fm.pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { fm.stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("parked vCPUs did not exit on stop")
	}
	for i, v := range fm.vcpus {
		if !v.immediate.Load() {
			t.Errorf("vCPU %d: immediate_exit cleared after stop", i)
		}
	}
	err := fm.gate.wait(context.Background(), 4)
	var te *TransitionError
	if !errors.As(err, &te) || te.From != StateStopped {
		t.Fatalf("wait on a stopped gate = %v", err)
	}
}

// TestMachineControlWithoutKVM drives the control methods of a machine with
// no vCPUs or devices (nothing that needs KVM): their lifecycle checks,
// Info, Metrics, Started and Kill.
func TestMachineControlWithoutKVM(t *testing.T) {
	cfg := Config{Kernel: "k", CPUs: 2, MemoryBytes: 64 << 20}
	m := newMachine(cfg, nil)
	m.log = discardLogger()
	wantState := func(op string, err error, from State) {
		t.Helper()
		var te *TransitionError
		if !errors.As(err, &te) || te.Op != op || te.From != from {
			t.Fatalf("%s: %v, want a TransitionError from %v", op, err, from)
		}
	}
	wantState(OpPause, m.Pause(context.Background()), StateCreated)
	wantState(OpResume, m.Resume(), StateCreated)
	wantState(OpShutdown, m.Shutdown(), StateCreated)
	if i := m.Info(); i.State != StateCreated || i.Uptime != 0 || i.VCPUs != 2 || i.MemoryBytes != 64<<20 || i.Outcome != "" || i.Config.Kernel != "k" {
		t.Fatalf("Info before Run: %+v", i)
	}
	if mt := m.Metrics(); len(mt.VCPUs) != 2 || len(mt.Devices) != 0 || mt.Exits["io"] != 0 {
		t.Fatalf("Metrics before Run: %+v", mt)
	}

	type result struct {
		o   Outcome
		err error
	}
	done := make(chan result, 1)
	go func() {
		o, err := m.Run(context.Background())
		done <- result{o, err}
	}()
	select {
	case <-m.Started():
	case <-time.After(5 * time.Second):
		t.Fatal("Started never closed")
	}
	if i := m.Info(); i.State != StateRunning {
		t.Fatalf("state %v after Started", i.State)
	}
	wantState(OpResume, m.Resume(), StateRunning)
	time.Sleep(2 * time.Millisecond)
	m.Kill()
	r := <-done
	if r.o != OutcomeStopped || r.err != nil {
		t.Fatalf("Run after Kill = %v, %v", r.o, r.err)
	}
	i := m.Info()
	if i.State != StateStopped || i.Outcome != "stopped" || i.Uptime <= 0 {
		t.Fatalf("Info after Kill: %+v", i)
	}
	if again := m.Info(); again.Uptime != i.Uptime {
		t.Fatalf("uptime still running after the stop: %v then %v", i.Uptime, again.Uptime)
	}
	wantState(OpPause, m.Pause(context.Background()), StateStopped)
	wantState(OpShutdown, m.Shutdown(), StateStopped)
	m.Kill() // a second kill is harmless
}

// TestKillBeforeRun: Run on a killed machine returns at once with the
// stop outcome and never reports started.
func TestKillBeforeRun(t *testing.T) {
	m := newMachine(Config{Kernel: "k", CPUs: 1, MemoryBytes: 64 << 20}, discardLogger())
	m.Kill()
	o, err := m.Run(context.Background())
	if o != OutcomeStopped || err != nil {
		t.Fatalf("Run = %v, %v", o, err)
	}
	select {
	case <-m.Started():
		t.Fatal("a machine killed before Run reports started")
	default:
	}
	if _, err := m.Run(context.Background()); err != nil {
		t.Fatalf("second Run: %v", err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
