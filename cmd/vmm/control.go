package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"kvmstack/virtio/ratelimit"
	"kvmstack/vmm"
	"kvmstack/vmm/api"
)

// controlled is a built machine as the control API drives it: it adapts
// *vmm.Machine to api.Machine and maps vmm's errors to the API's classes.
type controlled struct {
	m     *vmm.Machine
	cfg   vmm.Config
	start time.Time
}

// Operations the machine offers once package vmm has them (issue 5 lands
// them in parallel); until then the adapter answers ErrUnsupported.
type (
	pauser      interface{ Pause(context.Context) error }
	resumer     interface{ Resume() error }
	shutdowner  interface{ Shutdown() error }
	killer      interface{ Kill() }
	stater      interface{ State() vmm.State }
	snapshotter interface {
		Snapshot(context.Context, string) error
	}
)

func (c *controlled) Status() api.Status {
	st := api.Status{State: "running", Uptime: time.Since(c.start), VCPUs: c.cfg.CPUs, MemoryBytes: c.cfg.MemoryBytes}
	if s, ok := any(c.m).(stater); ok {
		st.State = s.State().String()
	}
	return st
}

func (c *controlled) Pause(ctx context.Context) error {
	p, ok := any(c.m).(pauser)
	if !ok {
		return fmt.Errorf("pause: %w", api.ErrUnsupported)
	}
	return apiError(p.Pause(ctx))
}

func (c *controlled) Resume() error {
	r, ok := any(c.m).(resumer)
	if !ok {
		return fmt.Errorf("resume: %w", api.ErrUnsupported)
	}
	return apiError(r.Resume())
}

func (c *controlled) Shutdown() error {
	s, ok := any(c.m).(shutdowner)
	if !ok {
		return fmt.Errorf("shutdown: %w", api.ErrUnsupported)
	}
	return apiError(s.Shutdown())
}

// Kill stops the run as SIGTERM does: vmm exits with ExitStopped.
func (c *controlled) Kill() {
	if k, ok := any(c.m).(killer); ok {
		k.Kill()
		return
	}
	c.m.Stop(vmm.OutcomeStopped, nil)
}

func (c *controlled) Metrics() api.Metrics {
	return api.Metrics{Exits: c.m.ExitCounts()}
}

func (c *controlled) Snapshot(ctx context.Context, dir string) error {
	s, ok := any(c.m).(snapshotter)
	if !ok {
		return fmt.Errorf("snapshot: %w", api.ErrUnsupported)
	}
	return apiError(s.Snapshot(ctx, dir))
}

func (c *controlled) SetRateLimit(dev api.DeviceRef, rl api.RateLimiter) error {
	if _, err := rateLimits(rl); err != nil {
		return err
	}
	return fmt.Errorf("changing the rate limit of %s %s: %w", dev.Kind, dev.ID, api.ErrUnsupported)
}

// rateLimits converts the API's limiter to the devices'.
func rateLimits(rl api.RateLimiter) (ratelimit.Limits, error) {
	var l ratelimit.Limits
	conv := func(tb *api.TokenBucket) ratelimit.TokenBucket {
		if tb == nil {
			return ratelimit.TokenBucket{}
		}
		return ratelimit.TokenBucket{Size: tb.Size, OneTimeBurst: tb.OneTimeBurst, RefillTime: time.Duration(tb.RefillTimeMs) * time.Millisecond}
	}
	l.Bandwidth, l.Ops = conv(rl.Bandwidth), conv(rl.Ops)
	if err := l.Validate(); err != nil {
		return l, fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	return l, nil
}

// apiError classes vmm's errors for the API's status codes.
func apiError(err error) error {
	var te *vmm.TransitionError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te):
		return fmt.Errorf("%w: %w", api.ErrWrongState, err)
	case errors.Is(err, vmm.ErrConfig) || isFileError(err):
		return fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	return err
}

// launch is a machine the API built, handed to run's main loop.
type launch struct {
	m    *vmm.Machine
	ctl  *controlled
	done chan runResult
}

type runResult struct {
	outcome vmm.Outcome
	err     error
}

// launcher builds machines for the API (InstanceStart, restore) and runs
// them until runCtx ends; run learns of each through launched.
type launcher struct {
	runCtx      context.Context
	log         *slog.Logger
	serial      io.Writer
	serialInput io.Reader
	launched    chan *launch
}

func (l *launcher) Start(ctx context.Context, cfg api.VMConfig) (api.Machine, error) {
	vc := cfg.VMMConfig()
	vc.Serial, vc.SerialInput = l.serial, l.serialInput
	m, err := vmm.New(vc, l.log)
	if err != nil {
		return nil, apiError(err)
	}
	return l.run(m, vc), nil
}

func (l *launcher) Restore(ctx context.Context, dir string) (api.Machine, api.VMConfig, error) {
	return nil, api.VMConfig{}, fmt.Errorf("restore from %s: %w", dir, api.ErrUnsupported)
}

// run starts m's Run and hands m to the main loop, which waits for it.
func (l *launcher) run(m *vmm.Machine, cfg vmm.Config) *controlled {
	c := &controlled{m: m, cfg: cfg, start: time.Now()}
	la := &launch{m: m, ctl: c, done: make(chan runResult, 1)}
	go func() {
		o, err := m.Run(l.runCtx)
		la.done <- runResult{o, err}
	}()
	l.launched <- la
	return c
}
