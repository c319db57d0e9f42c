package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"kvmstack/orchestrator/console"
	"kvmstack/orchestrator/identity"
	"kvmstack/orchestrator/state"
)

// Error codes of console requests the server could not hand to an agent.
const (
	// CodeAgentUnreachable: the host's agent did not answer (502).
	CodeAgentUnreachable = "agent_unreachable"
	// CodeAgentError: the agent answered with an error of its own (502).
	CodeAgentError = "agent_error"
)

// agentHTTP reaches agents' console endpoints. It has no overall timeout:
// a followed console stays open for as long as its user reads it.
var agentHTTP = &http.Client{
	Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: 15 * time.Second,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
	},
	// A redirect would take the signed request elsewhere.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// consoleOutput streams an instance's console log from its host's agent:
// GET /v1/instances/{id}/console?offset=N|tail=N&follow=1.
func (s *Server) consoleOutput(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	opts, err := console.ParseQuery(r.URL.Query())
	if err != nil {
		return badRequest("%s", err.Error())
	}
	in, h, err := s.consoleTarget(r, sub)
	if err != nil {
		return err
	}
	// Only the parsed options travel on: the agent sees a canonical query.
	resp, err := s.toAgent(r, in, h, http.MethodGet, opts.Query(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if off := resp.Header.Get(console.HeaderOffset); off != "" {
		w.Header().Set(console.HeaderOffset, off)
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	buf := make([]byte, 32<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return nil // the user went away; the agent's request ends with r's context
			}
			_ = rc.Flush()
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) && r.Context().Err() == nil {
				s.Log.Debug("console stream from agent ended", "instance", in.ID, "host", h.Name, "err", rerr)
			}
			return nil
		}
	}
}

// consoleInput writes the request body to the instance's serial console
// input: POST /v1/instances/{id}/console.
func (s *Server) consoleInput(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	in, h, err := s.consoleTarget(r, sub)
	if err != nil {
		return err
	}
	resp, err := s.toAgent(r, in, h, http.MethodPost, nil, r.Body)
	if err != nil {
		return err
	}
	resp.Body.Close()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// consoleTarget finds the instance (404 unless the caller's project's, or
// the caller is a system admin) and the host whose agent serves its
// console; 409 says why there is none.
func (s *Server) consoleTarget(r *http.Request, sub *identity.Subject) (*state.Instance, *state.Host, error) {
	rt := s.Store.Read(nil)
	in, _ := rt.Instance(r.PathValue("id"))
	if in == nil || projectAccess("instance:list", sub, in.ProjectID) != nil {
		return nil, nil, notFound("instance", r.PathValue("id"))
	}
	if err := projectAccess("instance:console", sub, in.ProjectID); err != nil {
		return nil, nil, err
	}
	conflict := func(format string, args ...any) error {
		return &Error{Status: http.StatusConflict, Message: fmt.Sprintf("instance %s: ", in.Name) + fmt.Sprintf(format, args...)}
	}
	switch {
	case in.State == state.InstanceDeleted:
		return nil, nil, conflict("is deleted; its console is gone")
	case in.HostID == "":
		return nil, nil, conflict("is not placed on a host (state %s)", in.State)
	}
	h, _ := rt.Host(in.HostID)
	switch {
	case h == nil:
		return nil, nil, conflict("its host %s is not registered", in.HostID)
	case in.State == state.InstanceHostDown || !h.Up(s.Now(), s.Config.HostTTL):
		return nil, nil, conflict("its host %s is down (last heartbeat %s)", h.Name, h.LastHeartbeat.UTC().Format(time.RFC3339))
	case h.ConsoleAddr == "":
		return nil, nil, conflict("the agent of host %s serves no console (it registered no console address)", h.Name)
	}
	return in, h, nil
}

// toAgent sends a signed console request to h's agent and returns its
// successful response; failures become API errors: the agent's parameter
// errors as they are, its "no such console" as 409, anything else 502.
func (s *Server) toAgent(r *http.Request, in *state.Instance, h *state.Host, method string, q url.Values, body io.Reader) (*http.Response, error) {
	u := url.URL{Scheme: "http", Host: h.ConsoleAddr, Path: "/v1/instances/" + url.PathEscape(in.ID) + "/console", RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(r.Context(), method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("console request to %s: %w", h.ConsoleAddr, err)
	}
	if body != nil {
		req.ContentLength = r.ContentLength
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	// Signatures are checked against the agent's wall clock, not the
	// server's (possibly simulated) one.
	if err := console.Sign(req, h.ConsoleKey, time.Now()); err != nil {
		return nil, fmt.Errorf("host %s: %w", h.Name, err)
	}
	resp, err := agentHTTP.Do(req)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &Error{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("console input exceeds %d bytes per request", mbe.Limit)}
		}
		return nil, &Error{Status: http.StatusBadGateway, Code: CodeAgentUnreachable,
			Message: fmt.Sprintf("the agent of host %s (%s) is unreachable: %v", h.Name, h.ConsoleAddr, err)}
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb ErrorBody
	msg := resp.Status
	if json.Unmarshal(raw, &eb) == nil && eb.Error.Message != "" {
		msg = eb.Error.Message
	}
	msg = fmt.Sprintf("host %s: %s", h.Name, msg)
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusRequestedRangeNotSatisfiable, http.StatusRequestEntityTooLarge:
		return nil, &Error{Status: resp.StatusCode, Message: msg}
	case http.StatusNotFound, http.StatusConflict:
		return nil, &Error{Status: http.StatusConflict, Message: msg}
	case http.StatusUnauthorized, http.StatusForbidden:
		// Not the user's credentials: the agent refused the server's.
		return nil, &Error{Status: http.StatusBadGateway, Code: CodeAgentError, Message: "the agent refused the server's signature: " + msg}
	}
	return nil, &Error{Status: http.StatusBadGateway, Code: CodeAgentError, Message: msg}
}
