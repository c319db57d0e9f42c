package api

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// fakeMachine follows the lifecycle rules of vmm's state machine closely
// enough to exercise every handler's success and wrong-state paths.
type fakeMachine struct {
	mu      sync.Mutex
	state   string
	drives  int
	nets    int
	calls   []string
	limits  map[DeviceRef]RateLimiter
	metrics Metrics
}

func newFakeMachine(state string) *fakeMachine {
	return &fakeMachine{state: state, drives: 1, nets: 1, limits: map[DeviceRef]RateLimiter{},
		metrics: Metrics{
			Exits:    map[string]uint64{"io": 42, "mmio": 7},
			Devices:  []DeviceMetrics{{Name: "root", Kind: "drive", Bytes: 4096, Ops: 1, Errors: 0}},
			VCPUTime: []time.Duration{1500 * time.Millisecond},
		}}
}

func (f *fakeMachine) record(c string) {
	f.calls = append(f.calls, c)
}

func (f *fakeMachine) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Status{State: f.state, Uptime: 2 * time.Second, VCPUs: 2, MemoryBytes: 256 << 20}
}

func (f *fakeMachine) transition(op, from, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(op)
	if f.state != from {
		return fmt.Errorf("%w: cannot %s a %s vm", ErrWrongState, op, f.state)
	}
	f.state = to
	return nil
}

func (f *fakeMachine) Pause(ctx context.Context) error {
	return f.transition("pause", "running", "paused")
}
func (f *fakeMachine) Resume() error   { return f.transition("resume", "paused", "running") }
func (f *fakeMachine) Shutdown() error { return f.transition("shutdown", "running", "running") }

func (f *fakeMachine) Kill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("kill")
	f.state = "stopped"
}

func (f *fakeMachine) Metrics() Metrics { return f.metrics }

func (f *fakeMachine) Snapshot(ctx context.Context, dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("snapshot " + dir)
	if f.state != "paused" {
		return fmt.Errorf("%w: cannot snapshot a %s vm", ErrWrongState, f.state)
	}
	return nil
}

func (f *fakeMachine) SetRateLimit(dev DeviceRef, rl RateLimiter) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(fmt.Sprintf("ratelimit %s %s %d", dev.Kind, dev.ID, dev.Index))
	n := f.drives
	if dev.Kind == KindNet {
		n = f.nets
	}
	if dev.Index >= n {
		return fmt.Errorf("%w: %s %d", ErrNotFound, dev.Kind, dev.Index)
	}
	f.limits[dev] = rl
	return nil
}

// fakeLauncher hands out fake machines and remembers what it was asked.
type fakeLauncher struct {
	mu         sync.Mutex
	started    []VMConfig
	restored   []string
	startErr   error
	restoreErr error
	machine    *fakeMachine
}

func (l *fakeLauncher) Start(ctx context.Context, cfg VMConfig) (Machine, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.started = append(l.started, cfg)
	if l.startErr != nil {
		return nil, l.startErr
	}
	l.machine = newFakeMachine("running")
	l.machine.drives, l.machine.nets = len(cfg.Drives), len(cfg.NetworkInterfaces)
	return l.machine, nil
}

func (l *fakeLauncher) Restore(ctx context.Context, dir string) (Machine, VMConfig, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.restored = append(l.restored, dir)
	if l.restoreErr != nil {
		return nil, VMConfig{}, l.restoreErr
	}
	l.machine = newFakeMachine("paused")
	return l.machine, VMConfig{BootSource: &BootSource{KernelImagePath: "/restored/vmlinux"}, MachineConfig: MachineConfig{VCPUCount: 2, MemSizeMiB: 256}}, nil
}
