package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"kvmstack/vmm"
	"kvmstack/vmm/api"
	"kvmstack/vmm/seccomp"
)

// controlled is a built machine as the control API drives it: it adapts
// *vmm.Machine to api.Machine and maps vmm's errors to the API's classes.
type controlled struct {
	m *vmm.Machine
	// cfg names the devices as the API does (drive_id, iface_id).
	cfg api.VMConfig
}

func (c *controlled) Status() api.Status {
	info := c.m.Info()
	return api.Status{State: info.State.String(), Uptime: info.Uptime, VCPUs: info.VCPUs, MemoryBytes: info.MemoryBytes}
}

func (c *controlled) Pause(ctx context.Context) error { return apiError(c.m.Pause(ctx)) }
func (c *controlled) Resume() error                   { return apiError(c.m.Resume()) }
func (c *controlled) Shutdown() error                 { return apiError(c.m.Shutdown()) }

// Kill stops the run as SIGTERM does: vmm exits with ExitStopped.
func (c *controlled) Kill() { c.m.Kill() }

func (c *controlled) Snapshot(ctx context.Context, dir string) error {
	return apiError(c.m.Snapshot(ctx, dir))
}

// Metrics names each virtio device by its API ID: vmm counts them per
// type in configuration order (block0, net1), the order of cfg's lists.
func (c *controlled) Metrics() api.Metrics {
	mt := c.m.Metrics()
	out := api.Metrics{Exits: mt.Exits}
	for _, d := range mt.Devices {
		name, kind := d.ID, d.Type
		switch d.Type {
		case "block":
			kind = string(api.KindDrive)
			if i, ok := deviceIndex(d.ID, "block"); ok && i < len(c.cfg.Drives) {
				name = c.cfg.Drives[i].DriveID
			}
		case "net":
			kind = string(api.KindNet)
			if i, ok := deviceIndex(d.ID, "net"); ok && i < len(c.cfg.NetworkInterfaces) {
				name = c.cfg.NetworkInterfaces[i].IfaceID
			}
		}
		out.Devices = append(out.Devices, api.DeviceMetrics{Name: name, Kind: kind, Bytes: d.ReadBytes + d.WriteBytes, Ops: d.Ops, Errors: d.Errors})
	}
	for _, v := range mt.VCPUs {
		out.VCPUTime = append(out.VCPUTime, v.RunTime)
	}
	return out
}

// deviceIndex reads N from vmm's device ID prefixN.
func deviceIndex(id, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(id, prefix)
	if !ok || rest == "" {
		return 0, false
	}
	n := 0
	for _, c := range []byte(rest) {
		if c < '0' || c > '9' || n > 1<<20 {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func (c *controlled) SetRateLimit(dev api.DeviceRef, rl api.RateLimiter) error {
	var err error
	switch dev.Kind {
	case api.KindDrive:
		err = c.m.SetDiskRateLimit(dev.Index, rl.Limits())
	case api.KindNet:
		err = c.m.SetNetRateLimit(dev.Index, rl.Limits())
	default:
		err = fmt.Errorf("%w: device kind %q", api.ErrNotFound, dev.Kind)
	}
	return apiError(err)
}

// apiError classes vmm's errors for the API's status codes.
func apiError(err error) error {
	var te *vmm.TransitionError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te), errors.Is(err, vmm.ErrPowerButtonIgnored):
		return fmt.Errorf("%w: %w", api.ErrWrongState, err)
	case errors.Is(err, vmm.ErrNoDevice):
		return fmt.Errorf("%w: %w", api.ErrNotFound, err)
	case restoreUsageError(err) || isFileError(err):
		return fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	return err
}

// restoreUsageError tells a snapshot or configuration the user got wrong
// from a failure of the host.
func restoreUsageError(err error) bool {
	return errors.Is(err, vmm.ErrConfig) || errors.Is(err, vmm.ErrSnapshotVersion) || errors.Is(err, vmm.ErrSnapshotCorrupt)
}

// launch is a machine handed to run's main loop.
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
	// seccomp is --seccomp: on, off or log.
	seccomp  string
	launched chan *launch
}

// secure installs the system call filter: the machine is built (KVM fds,
// guest RAM, disks and TAPs open) and the API socket listens, so from here
// on vmm needs only the calls docs/SECCOMP.md lists.
func (l *launcher) secure() error {
	var err error
	switch l.seccomp {
	case "off":
		l.log.Warn("seccomp filter off (--seccomp off)")
		return nil
	case "log":
		err = seccomp.InstallLog()
	default:
		err = seccomp.Install()
	}
	if err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	l.log.Info("seccomp filter installed", "mode", l.seccomp)
	return nil
}

func (l *launcher) Start(ctx context.Context, cfg api.VMConfig) (api.Machine, error) {
	vc := cfg.VMMConfig()
	vc.Serial, vc.SerialInput = l.serial, l.serialInput
	m, err := vmm.New(vc, l.log)
	if err != nil {
		return nil, apiError(err)
	}
	if err := l.secure(); err != nil {
		closeQuietly(m, l.log)
		return nil, err
	}
	return l.run(m, cfg), nil
}

// Restore builds the machine saved in dir and runs it: Run starts with
// every vCPU parked, and the machine stays paused until PUT /vm/state.
func (l *launcher) Restore(ctx context.Context, dir string) (api.Machine, api.VMConfig, error) {
	m, err := l.restore(ctx, dir)
	if err != nil {
		return nil, api.VMConfig{}, apiError(err)
	}
	if err := l.secure(); err != nil {
		closeQuietly(m, l.log)
		return nil, api.VMConfig{}, err
	}
	cfg := restoredConfig(m)
	c := l.run(m, cfg)
	return c, cfg, nil
}

func (l *launcher) restore(ctx context.Context, dir string) (*vmm.Machine, error) {
	m, err := vmm.Restore(ctx, dir, l.log, vmm.RestoreOptions{Serial: l.serial, SerialInput: l.serialInput})
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", dir, err)
	}
	return m, nil
}

// restoredConfig describes a restored machine in API terms, from what it
// reports of itself.
func restoredConfig(m *vmm.Machine) api.VMConfig {
	ci := m.Info().Config
	return api.ConfigFromVMM(vmm.Config{Kernel: ci.Kernel, Initrd: ci.Initrd, Cmdline: ci.Cmdline, CPUs: ci.CPUs,
		MemoryBytes: ci.MemoryBytes, PreferPVH: ci.PreferPVH, Disks: ci.Disks, Nets: ci.Nets, RNG: ci.RNG})
}

// run starts m's Run, waits until it has begun (so Resume on a restored
// machine cannot race Run's parking of its vCPUs), and hands m to the
// main loop.
func (l *launcher) run(m *vmm.Machine, cfg api.VMConfig) *controlled {
	c := &controlled{m: m, cfg: cfg}
	la := &launch{m: m, ctl: c, done: make(chan runResult, 1)}
	go func() {
		o, err := m.Run(l.runCtx)
		la.done <- runResult{o, err}
	}()
	select {
	case <-m.Started():
	case r := <-la.done:
		// Ended before it began (a stop raced the start): the main
		// loop still gets the outcome.
		la.done <- r
	}
	l.launched <- la
	return c
}

// closeQuietly releases a machine that will not run, logging what failed:
// vmm is on its way out with an error of its own.
func closeQuietly(m *vmm.Machine, log *slog.Logger) {
	if err := m.Close(); err != nil {
		log.Warn("releasing the machine", "err", err)
	}
}
