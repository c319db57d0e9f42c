package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/state"
)

// Clock tells the time. The leader's host failure detector, the API and the
// scheduler read it; the FSM never does (it uses each command's time).
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// ManualClock is a Clock that moves only when told to: tests (here, in the
// API and in the CLI) use it to pass a host's TTL or a signature's expiry
// without waiting. Several servers may share one.
type ManualClock struct {
	mu sync.Mutex
	t  time.Time
}

// NewManualClock returns a ManualClock showing t.
func NewManualClock(t time.Time) *ManualClock { return &ManualClock{t: t} }

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// watchHosts is the leader's host failure detector: every
// HostCheckInterval it proposes HostDown for each host whose last heartbeat
// is older than HostTTL. A new leader first gives every host a full TTL
// from its election (as Nomad does), so a host is not declared down
// because heartbeats could not be committed during the election or while
// the whole cluster was stopped.
func (s *Server) watchHosts(ctx context.Context) {
	since := s.cfg.Clock.Now()
	t := time.NewTicker(s.cfg.HostCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.checkHosts(ctx, since)
	}
}

// checkHosts marks down the hosts that missed their heartbeats as of now.
func (s *Server) checkHosts(ctx context.Context, leaderSince time.Time) {
	now := s.cfg.Clock.Now().UTC()
	if now.Sub(leaderSince) <= s.cfg.HostTTL {
		return
	}
	hosts, err := s.store.Read(nil).Hosts()
	if err != nil {
		s.log.Warn("host check: list hosts", "err", err)
		return
	}
	for _, h := range hosts {
		if h.Down || now.Sub(h.LastHeartbeat) <= s.cfg.HostTTL {
			continue
		}
		err := s.propose(ctx, &fsm.HostDown{Header: fsm.Header{At: now}, ID: h.ID, TTL: s.cfg.HostTTL})
		switch {
		case err == nil:
			s.log.Warn("host is down: no heartbeat", "host", h.Name, "last_heartbeat", h.LastHeartbeat, "ttl", s.cfg.HostTTL)
		case errors.Is(err, state.ErrConflict), errors.Is(err, state.ErrNotFound):
			// A heartbeat or a deletion was committed first.
		default:
			s.log.Warn("host check: mark down", "host", h.Name, "err", err)
		}
	}
}
