package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/state"
)

// ErrAmbiguous is returned by Instance when a name matches more than one
// instance the token can see: the caller must give the id.
var ErrAmbiguous = errors.New("name matches several instances")

// ErrNotFound is returned by Instance when neither an id nor a name matches.
var ErrNotFound = errors.New("not found")

// Instance returns an instance by id or, failing that, by its name among
// the instances the token sees (every project's, for a system admin).
func (c *Client) Instance(ctx context.Context, idOrName string) (*state.Instance, error) {
	var in state.Instance
	_, err := c.Do(ctx, http.MethodGet, "/v1/instances/"+url.PathEscape(idOrName), nil, nil, &in)
	if err == nil {
		return &in, nil
	}
	if !IsStatus(err, http.StatusNotFound) {
		return nil, err
	}
	// all_projects is ignored for anyone but a system admin, who would
	// otherwise see only the admin project's instances by name.
	var list []*state.Instance
	if _, err := c.Do(ctx, http.MethodGet, "/v1/instances", url.Values{"name": {idOrName}, "all_projects": {"1"}}, nil, &list); err != nil {
		return nil, err
	}
	switch len(list) {
	case 0:
		return nil, fmt.Errorf("instance %q: %w", idOrName, ErrNotFound)
	case 1:
		return list[0], nil
	}
	return nil, fmt.Errorf("instance %q: %w (%d): give the id", idOrName, ErrAmbiguous, len(list))
}

// InstanceAction asks for a power action (state.ActionStop, ActionStart,
// ActionReboot, ActionPause or ActionResume) on instance id and returns the
// instance as recorded. The host's agent carries the action out and reports
// the new state later; an action that does not apply to the instance's
// state fails with HTTP 409 and an unknown action with 400.
func (c *Client) InstanceAction(ctx context.Context, id, action string) (*state.Instance, error) {
	var out state.Instance
	if _, err := c.Do(ctx, http.MethodPost, "/v1/instances/"+url.PathEscape(id)+"/action", nil, api.ActionRequest{Action: action}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
