package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/state"
)

// CreateNetwork creates a network in the token's project.
func (c *Client) CreateNetwork(ctx context.Context, name, cidr string) (*api.NetworkView, error) {
	var out api.NetworkView
	if _, err := c.Do(ctx, http.MethodPost, "/v1/networks", nil, api.NetworkRequest{Name: name, CIDR: cidr}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Networks lists the token's project's networks (every project's with
// allProjects, for system admins).
func (c *Client) Networks(ctx context.Context, allProjects bool) ([]api.NetworkView, error) {
	var q url.Values
	if allProjects {
		q = url.Values{"all_projects": {"1"}}
	}
	var out []api.NetworkView
	_, err := c.Do(ctx, http.MethodGet, "/v1/networks", q, nil, &out)
	return out, err
}

// Network returns a network by id or name.
func (c *Client) Network(ctx context.Context, idOrName string) (*api.NetworkView, error) {
	var out api.NetworkView
	if _, err := c.Do(ctx, http.MethodGet, "/v1/networks/"+url.PathEscape(idOrName), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteNetwork deletes a network without ports (HTTP 409 otherwise).
func (c *Client) DeleteNetwork(ctx context.Context, idOrName string) error {
	_, err := c.Do(ctx, http.MethodDelete, "/v1/networks/"+url.PathEscape(idOrName), nil, nil, nil)
	return err
}

// NetworkPorts lists a network's ports.
func (c *Client) NetworkPorts(ctx context.Context, idOrName string) ([]*state.Port, error) {
	var out []*state.Port
	_, err := c.Do(ctx, http.MethodGet, "/v1/networks/"+url.PathEscape(idOrName)+"/ports", nil, nil, &out)
	return out, err
}

// InstancePorts lists an instance's ports in NIC order.
func (c *Client) InstancePorts(ctx context.Context, instanceID string) ([]*state.Port, error) {
	var out []*state.Port
	_, err := c.Do(ctx, http.MethodGet, "/v1/instances/"+url.PathEscape(instanceID)+"/ports", nil, nil, &out)
	return out, err
}

// HostNetworking returns what the agent of host (id or name) must plumb.
// With index > 0 it is a blocking query: it returns once the answer is newer
// than index or wait has passed. It also returns the index to pass next time.
func (c *Client) HostNetworking(ctx context.Context, host string, index uint64, wait time.Duration) (*state.HostNetworking, uint64, error) {
	q := url.Values{"host": {host}}
	if index > 0 {
		q.Set("index", strconv.FormatUint(index, 10))
		q.Set("wait", wait.String())
	}
	var out state.HostNetworking
	idx, err := c.Do(ctx, http.MethodGet, "/v1/ports", q, nil, &out)
	if err != nil {
		return nil, idx, err
	}
	return &out, idx, nil
}

// WatchHostNetworking calls fn with the host's networking now and after
// every change until fn returns false or ctx ends. Transient server errors
// (5xx, no leader) are retried; a 4xx (host deleted, forbidden) ends the watch.
func (c *Client) WatchHostNetworking(ctx context.Context, host string, fn func(*state.HostNetworking) bool) error {
	var index uint64
	for {
		hn, idx, err := c.HostNetworking(ctx, host, index, 30*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ae *APIError
			if errors.As(err, &ae) && ae.Status < 500 {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		if idx == index {
			// The wait expired without a change.
			continue
		}
		if !fn(hn) {
			return nil
		}
		index = idx
	}
}
