// Package raftnode owns one server's Raft participation: hashicorp/raft with
// raft-boltdb for the log and stable store, file snapshots and the TCP
// transport; proposing commands, membership changes, and the autopilot that
// removes servers which stopped answering heartbeats.
package raftnode
