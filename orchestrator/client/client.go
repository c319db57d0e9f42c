package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/state"
)

// APIError is an error response from a server.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// IsStatus reports whether err is an APIError with the given HTTP status.
func IsStatus(err error, status int) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == status
}

// Client talks to one server (which forwards to the leader as needed).
type Client struct {
	// Addr is host:port or a URL of any server.
	Addr string
	// Token authenticates requests.
	Token string
	// HTTP is the transport (default: a client with a 5 minute timeout).
	HTTP *http.Client
	// RetryFor is how long requests that no server applied (no leader
	// known) are retried (0 = 15s, negative = never).
	RetryFor time.Duration
}

// New returns a client for addr.
func New(addr, token string) *Client {
	return &Client{Addr: addr, Token: token, HTTP: &http.Client{Timeout: 5 * time.Minute}}
}

func (c *Client) base() string {
	if strings.HasPrefix(c.Addr, "http://") || strings.HasPrefix(c.Addr, "https://") {
		return strings.TrimRight(c.Addr, "/")
	}
	return "http://" + c.Addr
}

// Do sends a JSON request and decodes the JSON response into out (if not
// nil). It returns the Raft index the server reported.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) (uint64, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return 0, fmt.Errorf("client: encode request: %w", err)
		}
	}
	retry := c.RetryFor
	if retry == 0 {
		retry = 15 * time.Second
	}
	deadline := time.Now().Add(retry)
	delay := 50 * time.Millisecond
	for {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		idx, err := c.send(ctx, method, path, query, rd, "application/json", out)
		var ae *APIError
		if errors.As(err, &ae) && ae.Code == api.CodeNoLeader && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return 0, err
			case <-time.After(delay):
			}
			if delay < time.Second {
				delay *= 2
			}
			continue
		}
		return idx, err
	}
}

func (c *Client) send(ctx context.Context, method, path string, query url.Values, body io.Reader, ctype string, out any) (uint64, error) {
	u := c.base() + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return 0, fmt.Errorf("client: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	if sr, ok := body.(*sizedReader); ok {
		req.ContentLength = sr.n
	}
	if c.Token != "" {
		req.Header.Set(api.HeaderToken, c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	idx, _ := strconv.ParseUint(resp.Header.Get(api.HeaderIndex), 10, 64)
	if resp.StatusCode >= 300 {
		var eb api.ErrorBody
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(raw, &eb) != nil || eb.Error.Message == "" {
			eb.Error.Message = strings.TrimSpace(string(raw))
			if eb.Error.Message == "" {
				eb.Error.Message = resp.Status
			}
		}
		return idx, &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if w, ok := out.(io.Writer); ok {
			_, err = io.Copy(w, resp.Body)
		} else {
			err = json.NewDecoder(resp.Body).Decode(out)
		}
		if err != nil {
			return idx, fmt.Errorf("client: decode %s %s: %w", method, path, err)
		}
	}
	return idx, nil
}

// Login exchanges a password for a project-scoped token and keeps it.
func (c *Client) Login(ctx context.Context, user, password, project string) (*api.TokenResponse, error) {
	var out api.TokenResponse
	if _, err := c.Do(ctx, http.MethodPost, "/v1/auth/tokens", nil, api.TokenRequest{User: user, Password: password, Project: project}, &out); err != nil {
		return nil, err
	}
	c.Token = out.Token
	return &out, nil
}

// UploadImage streams size bytes from r as a new image. progress, if set,
// is called with the bytes sent so far.
func (c *Client) UploadImage(ctx context.Context, name, kind, visibility, sha256 string, r io.Reader, size int64, progress func(int64)) (*state.Image, error) {
	q := url.Values{"name": {name}, "kind": {kind}, "sha256": {sha256}}
	if visibility != "" {
		q.Set("visibility", visibility)
	}
	if progress != nil {
		r = &progressReader{r: r, f: progress}
	}
	var out state.Image
	rd := io.Reader(r)
	if size >= 0 {
		// A known length lets the server refuse oversized uploads at once.
		rd = &sizedReader{Reader: r, n: size}
	}
	if _, err := c.send(ctx, http.MethodPost, "/v1/images", q, rd, "application/octet-stream", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

type sizedReader struct {
	io.Reader
	n int64
}

type progressReader struct {
	r io.Reader
	n int64
	f func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	p.f(p.n)
	return n, err
}

// DownloadImage writes the image bytes to w.
func (c *Client) DownloadImage(ctx context.Context, id string, w io.Writer) error {
	_, err := c.send(ctx, http.MethodGet, "/v1/images/"+url.PathEscape(id)+"/file", nil, nil, "", w)
	return err
}

// WaitInstances blocks until fn accepts the project's instance list or ctx
// ends, using blocking queries against the given server.
func (c *Client) WaitInstances(ctx context.Context, query url.Values, fn func([]*state.Instance) bool) ([]*state.Instance, error) {
	var index uint64
	for {
		q := url.Values{}
		for k, v := range query {
			q[k] = v
		}
		q.Set("index", strconv.FormatUint(index, 10))
		q.Set("wait", "10s")
		var list []*state.Instance
		idx, err := c.Do(ctx, http.MethodGet, "/v1/instances", q, nil, &list)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			var ae *APIError
			if errors.As(err, &ae) && ae.Status < 500 {
				return nil, err
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if fn(list) {
			return list, nil
		}
		if ctx.Err() != nil {
			return list, ctx.Err()
		}
		index = idx
	}
}
