package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
)

func (s *Server) getVM(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	m, cfg, starting := s.machine, s.cfg.clone(), s.starting
	s.mu.Unlock()
	info := VMInfo{State: StateNotStarted, VCPUs: cfg.MachineConfig.VCPUCount, MemoryBytes: cfg.MachineConfig.MemSizeMiB << 20, Config: cfg}
	switch {
	case m != nil:
		st := m.Status()
		info.State, info.UptimeSeconds, info.VCPUs, info.MemoryBytes = st.State, st.Uptime.Seconds(), st.VCPUs, st.MemoryBytes
	case starting:
		info.State = StateStarting
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) putState(w http.ResponseWriter, r *http.Request) {
	b, ok := decode[StateBody](s, w, r, false)
	if !ok {
		return
	}
	var op func(Machine) error
	switch b.State {
	case "paused":
		op = func(m Machine) error { return m.Pause(r.Context()) }
	case "running":
		op = func(m Machine) error { return m.Resume() }
	default:
		writeError(w, http.StatusBadRequest, CodeInvalid, fmt.Sprintf("state %q: want running or paused", b.State))
		return
	}
	m := s.running(w)
	if m == nil {
		return
	}
	if err := op(m); err != nil {
		s.writeErr(w, r, err)
		return
	}
	noContent(w)
}

// empty is the body of requests that take none: absent or {}.
type empty struct{}

func (s *Server) postShutdown(w http.ResponseWriter, r *http.Request) {
	if _, ok := decode[empty](s, w, r, true); !ok {
		return
	}
	m := s.running(w)
	if m == nil {
		return
	}
	if err := m.Shutdown(); err != nil {
		s.writeErr(w, r, err)
		return
	}
	noContent(w)
}

func (s *Server) postKill(w http.ResponseWriter, r *http.Request) {
	if _, ok := decode[empty](s, w, r, true); !ok {
		return
	}
	m := s.running(w)
	if m == nil {
		return
	}
	m.Kill()
	noContent(w)
}

func (s *Server) getMetrics(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	m, cfg, starting := s.machine, s.cfg, s.starting
	s.mu.Unlock()
	st := Status{State: StateNotStarted, VCPUs: cfg.MachineConfig.VCPUCount, MemoryBytes: cfg.MachineConfig.MemSizeMiB << 20}
	switch {
	case m != nil:
		st = m.Status()
	case starting:
		st.State = StateStarting
	}
	var mt *Metrics
	if m != nil {
		v := m.Metrics()
		mt = &v
	}
	w.Header().Set("Content-Type", MetricsContentType)
	if r.Method == http.MethodHead {
		return
	}
	// The client may be gone; there is nobody to tell.
	_ = writeExposition(w, families(st, mt))
}

func (s *Server) putSnapshot(w http.ResponseWriter, r *http.Request) {
	b, ok := decode[DirBody](s, w, r, false)
	if !ok {
		return
	}
	if b.Dir == "" {
		writeError(w, http.StatusBadRequest, CodeInvalid, "dir is required")
		return
	}
	m := s.running(w)
	if m == nil {
		return
	}
	if err := m.Snapshot(r.Context(), b.Dir); err != nil {
		s.writeErr(w, r, err)
		return
	}
	noContent(w)
}

func (s *Server) postRestore(w http.ResponseWriter, r *http.Request) {
	b, ok := decode[DirBody](s, w, r, false)
	if !ok {
		return
	}
	if b.Dir == "" {
		writeError(w, http.StatusBadRequest, CodeInvalid, "dir is required")
		return
	}
	if !s.beginStart(w, true) {
		return
	}
	m, cfg, err := s.opts.Launcher.Restore(r.Context(), b.Dir)
	s.endStart(m, &cfg, err)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	noContent(w)
}

func (s *Server) putActions(w http.ResponseWriter, r *http.Request) {
	b, ok := decode[Action](s, w, r, false)
	if !ok {
		return
	}
	if b.ActionType != "InstanceStart" {
		writeError(w, http.StatusBadRequest, CodeInvalid, fmt.Sprintf("action_type %q: want InstanceStart", b.ActionType))
		return
	}
	s.mu.Lock()
	cfg := s.cfg.clone()
	s.mu.Unlock()
	if cfg.BootSource == nil {
		writeError(w, http.StatusBadRequest, CodeInvalid, "no boot source (PUT /boot-source first)")
		return
	}
	if !s.beginStart(w, false) {
		return
	}
	m, err := s.opts.Launcher.Start(r.Context(), cfg)
	s.endStart(m, nil, err)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	noContent(w)
}

// beginStart claims the one start (InstanceStart or restore) a vmm gets,
// answering 409 when the machine exists or is being built. A restore
// also refuses a vmm already given configuration, which it would ignore.
func (s *Server) beginStart(w http.ResponseWriter, restore bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.opts.Launcher == nil:
		writeError(w, http.StatusConflict, CodeWrongState, "this vmm was started with a guest; it cannot start another")
	case s.machine != nil:
		writeError(w, http.StatusConflict, CodeWrongState, "the vm is already started")
	case s.starting:
		writeError(w, http.StatusConflict, CodeWrongState, "the vm is being started")
	case restore && s.touched:
		writeError(w, http.StatusConflict, CodeWrongState, "a restore replaces the configuration: restore into a vmm that was given none")
	default:
		s.starting = true
		return true
	}
	return false
}

func (s *Server) endStart(m Machine, cfg *VMConfig, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.starting = false
	if err != nil {
		return
	}
	s.machine = m
	if cfg != nil {
		s.cfg = cfg.clone()
	}
}

// configure applies change to a copy of the pre-boot configuration, checks
// the result and stores it; after the start the configuration is fixed.
func (s *Server) configure(w http.ResponseWriter, change func(*VMConfig) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.machine != nil || s.starting {
		writeError(w, http.StatusConflict, CodeWrongState, "the vm is started: its configuration can no longer change")
		return
	}
	c := s.cfg.clone()
	if err := change(&c); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalid, err.Error())
		return
	}
	if err := validatePreBoot(&c); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalid, err.Error())
		return
	}
	s.cfg, s.touched = c, true
	noContent(w)
}

// validatePreBoot runs vmm's own checks over a configuration that may not
// name a kernel yet; InstanceStart requires one.
func validatePreBoot(c *VMConfig) error {
	cfg := c.VMMConfig()
	if cfg.Kernel == "" {
		cfg.Kernel = "(not yet given)"
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	// Validate covers the rate limits, but only after a lossy clamp of
	// absurd refill times; check those on the wire values.
	for _, d := range c.Drives {
		if err := d.RateLimiter.checkWire(); err != nil {
			return fmt.Errorf("drive %s: rate_limiter: %w", d.DriveID, err)
		}
	}
	for _, n := range c.NetworkInterfaces {
		if err := n.RateLimiter.checkWire(); err != nil {
			return fmt.Errorf("network interface %s: rate_limiter: %w", n.IfaceID, err)
		}
	}
	return nil
}

func (s *Server) putBootSource(w http.ResponseWriter, r *http.Request) {
	b, ok := decode[BootSource](s, w, r, false)
	if !ok {
		return
	}
	s.configure(w, func(c *VMConfig) error {
		if b.KernelImagePath == "" {
			return errors.New("kernel_image_path is required")
		}
		c.BootSource = &b
		return nil
	})
}

func (s *Server) putMachineConfig(w http.ResponseWriter, r *http.Request) {
	b, ok := decode[MachineConfig](s, w, r, false)
	if !ok {
		return
	}
	s.configure(w, func(c *VMConfig) error {
		// Shifting to bytes must not wrap: 2^44 MiB is far past any
		// host and past what memory.Plan accepts.
		if b.MemSizeMiB == 0 || b.MemSizeMiB > 1<<44 {
			return fmt.Errorf("mem_size_mib %d: want 1 to %d", b.MemSizeMiB, uint64(1)<<44)
		}
		c.MachineConfig = b
		return nil
	})
}

// pathID reads and checks the {id} path segment.
func pathID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !validID(id) {
		writeError(w, http.StatusBadRequest, CodeInvalid, fmt.Sprintf("id %q: want 1 to 20 of A-Z a-z 0-9 _ -", id))
		return "", false
	}
	return id, true
}

func (s *Server) putDrive(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	b, ok := decode[Drive](s, w, r, false)
	if !ok {
		return
	}
	s.configure(w, func(c *VMConfig) error {
		if b.DriveID != id {
			return fmt.Errorf("drive_id %q differs from the path's %q", b.DriveID, id)
		}
		if b.PathOnHost == "" {
			return errors.New("path_on_host is required")
		}
		if i := slices.IndexFunc(c.Drives, func(d Drive) bool { return d.DriveID == id }); i >= 0 {
			c.Drives[i] = b
		} else {
			c.Drives = append(c.Drives, b)
		}
		return nil
	})
}

func (s *Server) putNet(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	b, ok := decode[NetworkInterface](s, w, r, false)
	if !ok {
		return
	}
	s.configure(w, func(c *VMConfig) error {
		if b.IfaceID != id {
			return fmt.Errorf("iface_id %q differs from the path's %q", b.IfaceID, id)
		}
		if b.HostDevName == "" {
			return errors.New("host_dev_name is required")
		}
		if i := slices.IndexFunc(c.NetworkInterfaces, func(n NetworkInterface) bool { return n.IfaceID == id }); i >= 0 {
			c.NetworkInterfaces[i] = b
		} else {
			c.NetworkInterfaces = append(c.NetworkInterfaces, b)
		}
		return nil
	})
}

func (s *Server) putRNG(w http.ResponseWriter, r *http.Request) {
	b, ok := decode[RNG](s, w, r, false)
	if !ok {
		return
	}
	s.configure(w, func(c *VMConfig) error {
		c.RNG = b.Enabled == nil || *b.Enabled
		return nil
	})
}

func (s *Server) patchDrive(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	b, ok := decode[Drive](s, w, r, false)
	if !ok {
		return
	}
	if b.DriveID != id || b.PathOnHost != "" || b.IsReadOnly || b.RateLimiter == nil {
		writeError(w, http.StatusBadRequest, CodeInvalid,
			fmt.Sprintf("PATCH /drives/%s: want drive_id %q and rate_limiter, nothing else", id, id))
		return
	}
	s.patch(w, r, KindDrive, id, *b.RateLimiter)
}

func (s *Server) patchNet(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	b, ok := decode[NetworkInterface](s, w, r, false)
	if !ok {
		return
	}
	if b.IfaceID != id || b.HostDevName != "" || b.GuestMAC != "" || b.RateLimiter == nil {
		writeError(w, http.StatusBadRequest, CodeInvalid,
			fmt.Sprintf("PATCH /network-interfaces/%s: want iface_id %q and rate_limiter, nothing else", id, id))
		return
	}
	s.patch(w, r, KindNet, id, *b.RateLimiter)
}

// patch changes one device's rate limiter: in the stored configuration
// before the start, on the device itself (and then in the configuration)
// after. The lock is held across SetRateLimit so two PATCHes of one
// device cannot leave the configuration disagreeing with the device.
func (s *Server) patch(w http.ResponseWriter, r *http.Request, kind DeviceKind, id string, rl RateLimiter) {
	if err := rl.validate(); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalid, "rate_limiter: "+err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.starting {
		writeError(w, http.StatusConflict, CodeWrongState, "the vm is being started")
		return
	}
	var slot **RateLimiter
	idx := -1
	switch kind {
	case KindDrive:
		if idx = slices.IndexFunc(s.cfg.Drives, func(d Drive) bool { return d.DriveID == id }); idx >= 0 {
			slot = &s.cfg.Drives[idx].RateLimiter
		}
	case KindNet:
		if idx = slices.IndexFunc(s.cfg.NetworkInterfaces, func(n NetworkInterface) bool { return n.IfaceID == id }); idx >= 0 {
			slot = &s.cfg.NetworkInterfaces[idx].RateLimiter
		}
	}
	if slot == nil {
		writeError(w, http.StatusNotFound, CodeNotFound, fmt.Sprintf("no %s %q", kind, id))
		return
	}
	if s.machine != nil {
		if err := s.machine.SetRateLimit(DeviceRef{Kind: kind, ID: id, Index: idx}, rl); err != nil {
			s.writeErr(w, r, err)
			return
		}
	}
	*slot = &rl
	s.touched = s.touched || s.machine == nil
	noContent(w)
}

// clone copies c deeply enough that the copy's slices and pointers can be
// changed or handed out without touching c.
func (c VMConfig) clone() VMConfig {
	if c.BootSource != nil {
		b := *c.BootSource
		c.BootSource = &b
	}
	c.Drives = append([]Drive{}, c.Drives...)
	c.NetworkInterfaces = append([]NetworkInterface{}, c.NetworkInterfaces...)
	return c
}
