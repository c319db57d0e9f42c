// Package scheduler owns instance placement: the filters (host up and
// enabled, free vCPU/RAM/disk after allocation ratios, server-group affinity
// and anti-affinity), the spread and pack weighers, batch placement, and the
// leader loop that commits placements through Raft. The FSM re-checks every
// placement, so the scheduler may be optimistic.
package scheduler
