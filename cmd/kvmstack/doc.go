// Command kvmstack is the cluster server and the command-line client of the
// kvmstack control plane: `kvmstack server` runs a Raft server, the other
// commands call the HTTP API of any server (KVMSTACK_ADDR) with a cached or
// given token (KVMSTACK_TOKEN).
package main
