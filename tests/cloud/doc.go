// Package cloud holds the cluster's end-to-end tests with real guests: three
// "hosts", each a network namespace running a `kvmstack server` and a
// `kvmstack agent`, joined by an underlay bridge in a fourth namespace, boot
// the guest kit under `vmm` and check what issue 7 asks of the whole stack:
// DHCP addresses and pings across VXLAN between hosts, isolation between
// networks, a clean host after everything is deleted, and the faults (agent
// killed and re-adopting its guests, a host going down and being evacuated,
// a vmm killed, a full disk on the agent).
//
// Like tests/e2e, the test binary re-executes itself inside the nested test
// host (tests/kvmhost) when this machine has no /dev/kvm. Every address the
// tests use lives in namespaces they create; nothing leaves them.
package cloud
