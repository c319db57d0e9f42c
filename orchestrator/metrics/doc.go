// Package metrics owns the server's Prometheus collectors (API, Raft,
// scheduler). Each server has its own registry so several servers can run
// in one process (tests, benchmarks).
package metrics
