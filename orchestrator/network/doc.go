// Package network owns the pure rules of tenant networking that the cluster
// state and the host agent must agree on: which CIDRs are acceptable, which
// addresses of a subnet are reserved, how guest MAC addresses are derived
// from port ids, the VXLAN VNI range, and the host interface names derived
// from network and port ids. Nothing here touches the kernel or the state
// store, so the FSM (which must be deterministic) and the agent (which must
// find its devices again after a restart) compute the same values.
package network
