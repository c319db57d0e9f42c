// Package hostnet owns the agent's host networking: it turns the cluster's
// view of one host (state.HostNetworking) into the data plane netdev/plumb
// builds (a bridge and a VXLAN device per network, forwarding entries to the
// peers' underlay addresses, a TAP per local port) and the DHCP servers
// netdev/dhcp runs on each bridge (leases for this host's ports only), and
// keeps both in step with every new view. It implements agent.Network.
package hostnet
