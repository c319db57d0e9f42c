// Package state owns the cluster's replicated data model: the go-memdb tables
// (one file per resource), the validation every mutation goes through, blocking
// reads, and whole-state snapshot/restore. It knows nothing about Raft; the fsm
// package feeds it committed commands in log order.
package state
