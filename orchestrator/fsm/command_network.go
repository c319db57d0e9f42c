package fsm

import "kvmstack/orchestrator/state"

// NetworkCreate adds a network. The FSM derives the gateway, DHCP address
// and VNI itself; only the id (random, chosen by the proposer), project,
// name and CIDR come from the command.
type NetworkCreate struct {
	Header
	Network state.Network `json:"network"`
}

// NetworkDelete removes a network without ports.
type NetworkDelete struct {
	Header
	ID string `json:"id"`
}

// Type implementations.
func (NetworkCreate) Type() Type { return TypeNetworkCreate }
func (NetworkDelete) Type() Type { return TypeNetworkDelete }
