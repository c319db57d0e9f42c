package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvmstack/vmm"
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
		status <- runContext(ctx, []string{"--api-socket", sock, "--serial", "none", "--seccomp", "off"}, strings.NewReader(""), io.Discard, &stderr)
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

// TestAPISocketUsage: guest flags with --api-socket still need a kernel; a
// socket that cannot be created, guest flags beside --restore and a
// missing snapshot are usage errors.
func TestAPISocketUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--api-socket", filepath.Join(t.TempDir(), "s"), "--cpus", "2"}, "no kernel"},
		{[]string{"--api-socket", "/nonexistent/dir/api.sock"}, "--api-socket"},
		{[]string{"--restore", t.TempDir(), "--kernel", "/etc/hostname"}, "from the snapshot"},
		{[]string{"--restore", "/nonexistent/snapshot"}, "restore /nonexistent/snapshot"},
	} {
		var stderr strings.Builder
		if s := runContext(context.Background(), tt.args, strings.NewReader(""), io.Discard, &stderr); s != ExitUsage || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: status %d, stderr %q; want %d and %q", tt.args, s, stderr.String(), ExitUsage, tt.want)
		}
	}
}

func TestDeviceIndex(t *testing.T) {
	for _, tt := range []struct {
		id, prefix string
		n          int
		ok         bool
	}{
		{"block0", "block", 0, true}, {"block12", "block", 12, true}, {"net3", "net", 3, true},
		{"block", "block", 0, false}, {"net1", "block", 0, false}, {"block1x", "block", 0, false},
		{"block99999999999999999999", "block", 0, false},
	} {
		n, ok := deviceIndex(tt.id, tt.prefix)
		if n != tt.n || ok != tt.ok {
			t.Errorf("deviceIndex(%q, %q) = %d, %v; want %d, %v", tt.id, tt.prefix, n, ok, tt.n, tt.ok)
		}
	}
}

// TestAPIErrorClasses: vmm's errors reach the API as the right status.
func TestAPIErrorClasses(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want error
	}{
		{&vmm.TransitionError{Op: vmm.OpPause, From: vmm.StatePaused}, api.ErrWrongState},
		{vmm.ErrPowerButtonIgnored, api.ErrWrongState},
		{fmt.Errorf("disk 3: %w", vmm.ErrNoDevice), api.ErrNotFound},
		{fmt.Errorf("%w: bad", vmm.ErrConfig), api.ErrInvalid},
		{fmt.Errorf("%w: v9", vmm.ErrSnapshotVersion), api.ErrInvalid},
		{fmt.Errorf("%w: short", vmm.ErrSnapshotCorrupt), api.ErrInvalid},
		{&os.PathError{Op: "open", Path: "/x", Err: os.ErrNotExist}, api.ErrInvalid},
	} {
		if got := apiError(tt.err); !errors.Is(got, tt.want) || !errors.Is(got, tt.err) {
			t.Errorf("apiError(%v) = %v, want it to wrap %v", tt.err, got, tt.want)
		}
	}
	if apiError(nil) != nil {
		t.Error("apiError(nil) is not nil")
	}
	if err := apiError(errors.New("KVM_RUN: EFAULT")); errors.Is(err, api.ErrInvalid) || errors.Is(err, api.ErrWrongState) {
		t.Errorf("a host failure classed as %v", err)
	}
}
