package server

import (
	"context"
	"errors"
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
