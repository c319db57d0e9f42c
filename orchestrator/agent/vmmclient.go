package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	vmmapi "kvmstack/vmm/api"
)

// VMMError is an error answer from a vmm's control API.
type VMMError struct {
	Status  int
	Code    string
	Message string
}

func (e *VMMError) Error() string {
	return fmt.Sprintf("vmm: %s (HTTP %d, %s)", e.Message, e.Status, e.Code)
}

// VMMClient speaks a vmm's control API (docs/VMM-API.md) over its unix
// socket.
type VMMClient struct {
	socket string
	hc     *http.Client
}

// NewVMMClient returns a client for the vmm listening on socket.
func NewVMMClient(socket string) *VMMClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		// One vmm, one socket: a couple of idle connections are plenty.
		MaxIdleConns: 2, IdleConnTimeout: 30 * time.Second,
	}
	return &VMMClient{socket: socket, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// Close drops idle connections.
func (c *VMMClient) Close() { c.hc.CloseIdleConnections() }

// Info is GET /vm.
func (c *VMMClient) Info(ctx context.Context) (*vmmapi.VMInfo, error) {
	var info vmmapi.VMInfo
	if err := c.do(ctx, http.MethodGet, "/vm", nil, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// SetState is PUT /vm/state: "paused" parks the guest, "running" resumes it.
func (c *VMMClient) SetState(ctx context.Context, st string) error {
	return c.do(ctx, http.MethodPut, "/vm/state", vmmapi.StateBody{State: st}, nil)
}

// Shutdown is POST /vm/shutdown: the ACPI power button. The guest decides
// whether and when to power off (vmm then exits 0).
func (c *VMMClient) Shutdown(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/vm/shutdown", nil, nil)
}

// Kill is POST /vm/kill: the guest stops at once and vmm exits 5.
func (c *VMMClient) Kill(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/vm/kill", nil, nil)
}

// Metrics is GET /metrics (Prometheus text).
func (c *VMMClient) Metrics(ctx context.Context) (string, error) {
	var b bytes.Buffer
	err := c.do(ctx, http.MethodGet, "/metrics", nil, &b)
	return b.String(), err
}

func (c *VMMClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("vmm %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	// The host part is ignored: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://vmm"+path, body)
	if err != nil {
		return fmt.Errorf("vmm %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("vmm %s %s on %s: %w", method, path, c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e vmmapi.Error
		if json.Unmarshal(raw, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(raw))
		}
		return &VMMError{Status: resp.StatusCode, Code: e.Code, Message: e.Message}
	}
	switch o := out.(type) {
	case nil:
		return nil
	case io.Writer:
		_, err = io.Copy(o, io.LimitReader(resp.Body, 16<<20))
	default:
		err = json.NewDecoder(resp.Body).Decode(out)
	}
	if err != nil {
		return fmt.Errorf("vmm %s %s: decode: %w", method, path, err)
	}
	return nil
}
