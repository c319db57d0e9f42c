// Package client is the Go client of the kvmstack HTTP API used by the CLI,
// agents and tests: JSON requests, API errors as typed values, safe retries
// of requests no server applied, blocking queries and streamed image upload.
package client
