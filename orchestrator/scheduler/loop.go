package scheduler

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"

	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/metrics"
	"kvmstack/orchestrator/state"
)

// Proposer commits a command through Raft and returns the FSM's result.
type Proposer func(ctx context.Context, c fsm.Command) (*fsm.Result, error)

// Loop places pending instances while its server is the leader.
type Loop struct {
	Store   *state.Store
	Propose Proposer
	Options Options
	// BatchSize bounds the placements committed in one Raft entry.
	BatchSize int
	// Pipeline is how many batches one pass places and proposes at once;
	// Raft commits them back to back instead of one round trip each.
	Pipeline int
	Metrics  *metrics.Metrics
	Log      *slog.Logger
	// Now is the clock (tests may fix it).
	Now func() time.Time

	rejects map[string]int
}

// maxRejects is how often the FSM may reject an instance's placement before
// the instance is failed with the FSM's reason instead of retried forever.
const maxRejects = 5

// Run places pending instances until ctx is cancelled.
func (l *Loop) Run(ctx context.Context) {
	if l.BatchSize <= 0 {
		l.BatchSize = 1000
	}
	if l.Pipeline <= 0 {
		l.Pipeline = 4
	}
	if l.Now == nil {
		l.Now = time.Now
	}
	if l.Log == nil {
		l.Log = slog.Default()
	}
	l.rejects = map[string]int{}
	var index uint64
	for ctx.Err() == nil {
		// Wait for a change to instances or hosts past what we last handled.
		next, err := l.Store.Blocking(ctx, index, func(r *state.ReadTxn) (uint64, error) {
			return r.Index("instances", "hosts", "server_groups"), nil
		})
		if err != nil || ctx.Err() != nil {
			return
		}
		index = next
		for ctx.Err() == nil {
			n, err := l.RunOnce(ctx)
			if err != nil {
				l.Log.Warn("scheduling pass failed", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
				break
			}
			if n == 0 {
				break
			}
		}
	}
}

// proposeChunks commits the placements as several Raft entries in flight
// together and returns the FSM's verdict for each placement.
func (l *Loop) proposeChunks(ctx context.Context, placements []state.Placement, now time.Time) ([]error, error) {
	size := max(l.BatchSize, 1)
	errs := make([]error, len(placements))
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for lo := 0; lo < len(placements); lo += size {
		hi := min(lo+size, len(placements))
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := l.Propose(ctx, &fsm.InstancePlace{Header: fsm.Header{At: now}, Rules: state.PlacementRules{HostTTL: l.Options.HostTTL}, Placements: placements[lo:hi]})
			if err == nil && res.Err != nil {
				err = res.Err
			}
			if err != nil {
				mu.Lock()
				firstErr = cmp.Or(firstErr, err)
				mu.Unlock()
				return
			}
			perPlacement, _ := res.Value.([]error)
			copy(errs[lo:hi], perPlacement)
		}()
	}
	wg.Wait()
	return errs, firstErr
}

// RunOnce places up to Pipeline batches of pending instances and returns how
// many instances it decided (placed or failed).
func (l *Loop) RunOnce(ctx context.Context) (int, error) {
	start := time.Now()
	r := l.Store.Read(nil)
	pending, err := r.Instances(state.InstanceFilter{State: state.InstancePending})
	if err != nil || len(pending) == 0 {
		return 0, err
	}
	sort.Slice(pending, func(i, j int) bool {
		if !pending[i].CreatedAt.Equal(pending[j].CreatedAt) {
			return pending[i].CreatedAt.Before(pending[j].CreatedAt)
		}
		return pending[i].ID < pending[j].ID
	})
	if limit := l.BatchSize * max(l.Pipeline, 1); len(pending) > limit {
		pending = pending[:limit]
	}
	hosts, err := r.Hosts()
	if err != nil {
		return 0, err
	}
	var grouped []*state.Instance
	policies := map[string]string{}
	reqs := make([]Request, 0, len(pending))
	for _, in := range pending {
		req := Request{InstanceID: in.ID, Resources: in.Resources(), GroupID: in.ServerGroupID}
		if in.ServerGroupID != "" {
			if _, ok := policies[in.ServerGroupID]; !ok {
				g, err := r.ServerGroup(in.ServerGroupID)
				if err != nil {
					return 0, err
				}
				if g != nil {
					policies[g.ID] = g.Policy
					members, err := r.Instances(state.InstanceFilter{GroupID: g.ID})
					if err != nil {
						return 0, err
					}
					grouped = append(grouped, members...)
				}
			}
			req.GroupPolicy = policies[in.ServerGroupID]
		}
		reqs = append(reqs, req)
	}
	now := l.Now()
	placements := NewPlacer(hosts, grouped, now, l.Options).Place(reqs)
	for i := range placements {
		if n := l.rejects[placements[i].InstanceID]; n >= maxRejects && placements[i].HostID != "" {
			placements[i] = state.Placement{InstanceID: placements[i].InstanceID, Error: "placement rejected repeatedly; see server log"}
		}
	}
	errs, err := l.proposeChunks(ctx, placements, now)
	if err != nil {
		return 0, err
	}
	decided := 0
	for i, p := range placements {
		var e error
		if i < len(errs) {
			e = errs[i]
		}
		switch {
		case e != nil && errors.Is(e, state.ErrNoCapacity):
			l.rejects[p.InstanceID]++
			l.count(func(m *metrics.Metrics) { m.PlacementRejects.Inc() })
			l.Log.Info("placement rejected by FSM, will retry", "instance", p.InstanceID, "err", e)
		case e != nil:
			// Deleted or already handled meanwhile: nothing to retry.
			decided++
		case p.HostID == "":
			decided++
			delete(l.rejects, p.InstanceID)
			l.count(func(m *metrics.Metrics) { m.NoValidHost.Inc() })
		default:
			decided++
			delete(l.rejects, p.InstanceID)
			l.count(func(m *metrics.Metrics) { m.Placements.Inc() })
		}
	}
	l.count(func(m *metrics.Metrics) { m.SchedulerBatch.Observe(time.Since(start).Seconds()) })
	if decided == 0 && len(placements) > 0 {
		// Everything was rejected: back off briefly instead of spinning.
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		return len(placements), nil
	}
	return decided, nil
}

func (l *Loop) count(f func(*metrics.Metrics)) {
	if l.Metrics != nil {
		f(l.Metrics)
	}
}
