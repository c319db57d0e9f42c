package client

import (
	"context"
	"net/http"
	"net/url"

	"kvmstack/orchestrator/api"
)

// EvacuateInstance rebuilds a host-down instance on another host (HTTP 409
// if its host is not down or no host can take it; nothing changes then).
func (c *Client) EvacuateInstance(ctx context.Context, id string) (*api.EvacuateResponse, error) {
	var out api.EvacuateResponse
	if _, err := c.Do(ctx, http.MethodPost, "/v1/instances/"+url.PathEscape(id)+"/evacuate", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// EvacuateHost rebuilds every host-down instance of a down host on other
// hosts, all of them or none (HTTP 409 if the host is up or they do not
// all fit).
func (c *Client) EvacuateHost(ctx context.Context, idOrName string) (*api.EvacuateResponse, error) {
	var out api.EvacuateResponse
	if _, err := c.Do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(idOrName)+"/evacuate", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
