// Package plumb owns one host's overlay data plane for the agent: per
// network a Linux bridge, a VXLAN device attached to it, the VXLAN's
// forwarding entries toward the other hosts, and a persistent TAP per
// instance NIC. Reconcile brings the links of one network namespace to a
// desired state from any starting point (including one a crash left half
// done) and removes what is no longer wanted, touching only links whose
// names carry one of the reconciler's prefixes.
package plumb
