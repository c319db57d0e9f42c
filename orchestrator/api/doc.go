// Package api owns the HTTP/JSON surface of a server: routing, token
// authentication and the policy check on every route, forwarding of writes
// (and default reads) to the leader, blocking queries, body limits, JSON
// errors, and the handlers that turn requests into replicated commands.
package api
