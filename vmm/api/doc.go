// Package api is vmm's control API: HTTP/JSON over a unix socket, the only
// interface through which the cluster agent drives a vmm process.
//
// It owns the wire format (request and response bodies, error codes, the
// Prometheus exposition of the machine's metrics), the pre-boot
// configuration a vmm started without guest flags collects before
// InstanceStart, and the socket itself (mode 0600, a stale file replaced
// only when nothing listens on it). It does not own the machine: handlers
// reach it through the small Machine and Launcher interfaces, which
// cmd/vmm implements over package vmm and the tests implement with fakes.
// docs/VMM-API.md and docs/openapi-vmm.yaml describe the endpoints.
package api
