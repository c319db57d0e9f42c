// Package server owns the life of one kvmstack cluster server: it wires the
// state store, FSM, Raft node, blob store and HTTP API together, bootstraps
// or joins the cluster, runs the leader-only duties (bootstrap admin,
// scheduler, dead-server cleanup), replicates image blobs from peers, and
// leaves the cluster gracefully on shutdown.
package server
