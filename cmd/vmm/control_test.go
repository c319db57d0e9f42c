package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvmstack/vmm/api"
)

// TestWaitForAPI runs vmm with only --api-socket: it serves the API on a
// 0600 socket, reports not_started, keeps serving after a failed
// InstanceStart, and exits with ExitStopped when stopped, removing the
// socket. No KVM is needed: the start fails before the guest exists.
func TestWaitForAPI(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr strings.Builder
	status := make(chan int, 1)
	go func() {
		status <- runContext(ctx, []string{"--api-socket", sock, "--serial", "none"}, strings.NewReader(""), io.Discard, &stderr)
	}()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no API socket after 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v %v, want mode 0600", st.Mode(), err)
	}
	call := func(method, path, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://vmm"+path, strings.NewReader(body))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, body := call("GET", "/vm", "")
	var info api.VMInfo
	if err := json.Unmarshal(body, &info); code != 200 || err != nil || info.State != api.StateNotStarted || info.VCPUs != 1 {
		t.Fatalf("GET /vm: %d %s", code, body)
	}
	if code, body := call("PUT", "/boot-source", `{"kernel_image_path": "/nonexistent/vmlinux"}`); code != 204 {
		t.Fatalf("PUT /boot-source: %d %s", code, body)
	}
	code, body = call("PUT", "/actions", `{"action_type": "InstanceStart"}`)
	var e api.Error
	if err := json.Unmarshal(body, &e); code < 400 || err != nil || e.Code == "" {
		t.Fatalf("InstanceStart of a missing kernel: %d %s", code, body)
	}
	if code, _ := call("GET", "/vm", ""); code != 200 {
		t.Fatalf("GET /vm after a failed start: %d", code)
	}
	cancel()
	select {
	case s := <-status:
		if s != ExitStopped {
			t.Fatalf("status %d, want %d; stderr %q", s, ExitStopped, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("vmm did not stop")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// TestAPISocketUsage: guest flags with --api-socket still need a kernel,
// and a socket that cannot be created is a usage error.
func TestAPISocketUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--api-socket", filepath.Join(t.TempDir(), "s"), "--cpus", "2"}, "no kernel"},
		{[]string{"--api-socket", "/nonexistent/dir/api.sock"}, "--api-socket"},
	} {
		var stderr strings.Builder
		if s := runContext(context.Background(), tt.args, strings.NewReader(""), io.Discard, &stderr); s != ExitUsage || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: status %d, stderr %q; want %d and %q", tt.args, s, stderr.String(), ExitUsage, tt.want)
		}
	}
}
