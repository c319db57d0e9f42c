package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/console"
)

// ConsoleStream is an instance's console output as the server streams it.
type ConsoleStream struct {
	io.ReadCloser
	// Offset is where in the retained log (rotated copies, then the
	// current log) the first byte read lies.
	Offset int64
}

// Console opens instance id's serial console log. With opts.Follow the
// stream stays open, delivering bytes as the guest writes them, until ctx
// ends, the stream is closed or the instance is deleted. Errors before the
// first byte are *APIError (404 no such instance, 409 not placed or host
// down, 502 agent unreachable).
func (c *Client) Console(ctx context.Context, id string, opts console.Options) (*ConsoleStream, error) {
	u := c.base() + "/v1/instances/" + url.PathEscape(id) + "/console"
	if q := opts.Query(); len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if c.Token != "" {
		req.Header.Set(api.HeaderToken, c.Token)
	}
	// The client's overall timeout would cut a followed stream off.
	hc := &http.Client{}
	if c.HTTP != nil {
		hc.Transport = c.HTTP.Transport
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: console %s: %w", id, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	off, _ := strconv.ParseInt(resp.Header.Get(console.HeaderOffset), 10, 64)
	return &ConsoleStream{ReadCloser: resp.Body, Offset: off}, nil
}

// ConsoleInput writes what r holds (up to 1 MiB per call) to instance id's
// serial console input, as if typed.
func (c *Client) ConsoleInput(ctx context.Context, id string, r io.Reader) error {
	_, err := c.send(ctx, http.MethodPost, "/v1/instances/"+url.PathEscape(id)+"/console", nil, r, "application/octet-stream", nil)
	return err
}

// decodeError turns an error response into an *APIError.
func decodeError(resp *http.Response) error {
	var eb api.ErrorBody
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(raw, &eb) != nil || eb.Error.Message == "" {
		eb.Error.Message = strings.TrimSpace(string(raw))
		if eb.Error.Message == "" {
			eb.Error.Message = resp.Status
		}
	}
	return &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
}
