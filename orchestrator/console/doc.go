// Package console owns the serial console stream protocol shared by the
// API servers, the host agents and the Go client: the query parameters of
// a console read (offset, tail, follow) and their validation, and the
// per-request signature with which a server proves to an agent that it is
// a cluster server (an HMAC under the agent's console key, bound to the
// method, path, query and an expiry, with a nonce the agent accepts once).
// Reading the log files and the input FIFO is the agent's job; proxying
// and project scoping is the API's.
package console
