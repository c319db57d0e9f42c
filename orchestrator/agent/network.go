package agent

import (
	"context"

	"kvmstack/orchestrator/state"
)

// Network plumbs the host's side of instance networking (bridges, TAPs,
// VXLAN and FDB entries, DHCP) to match the cluster's view. The agent calls
// Reconcile with every new view before it starts instances whose ports the
// view contains, and again after a failure; Reconcile must be idempotent.
type Network interface {
	Reconcile(ctx context.Context, hn *state.HostNetworking) error
}

// NoNetwork plumbs nothing: for hosts whose TAPs are made by someone else,
// and for tests.
type NoNetwork struct{}

// Reconcile does nothing.
func (NoNetwork) Reconcile(context.Context, *state.HostNetworking) error { return nil }
