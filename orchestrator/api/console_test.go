package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/console"
	"kvmstack/orchestrator/server"
	"kvmstack/orchestrator/state"
)

// fakeAgent is a console endpoint that checks the servers' signatures
// with its key and answers as told.
type fakeAgent struct {
	key string
	v   *console.Verifier
	srv *httptest.Server

	mu       sync.Mutex
	calls    int
	query    string
	header   http.Header
	input    string
	status   int           // the next answer's status (0: 200/204)
	release  chan struct{} // a follow sends "first", waits for it, then "second"
	streamed chan struct{} // closed when a follow's request context ended
}

func newFakeAgent(t *testing.T) *fakeAgent {
	key, _ := console.NewKey()
	v, _ := console.NewVerifier(key, nil)
	a := &fakeAgent{key: key, v: v, release: make(chan struct{}), streamed: make(chan struct{})}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAgent) serve(w http.ResponseWriter, r *http.Request) {
	if err := a.v.Verify(r); err != nil {
		http.Error(w, `{"error":{"status":401,"message":"`+err.Error()+`"}}`, http.StatusUnauthorized)
		return
	}
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.calls++
	a.query, a.header, a.input = r.URL.RawQuery, r.Header.Clone(), string(body)
	status := a.status
	a.status = 0
	a.mu.Unlock()
	if status != 0 {
		w.WriteHeader(status)
		io.WriteString(w, `{"error":{"status":0,"message":"agent says no"}}`)
		return
	}
	if r.Method == http.MethodPost {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set(console.HeaderOffset, "42")
	io.WriteString(w, "first")
	if r.URL.Query().Get("follow") != "1" {
		return
	}
	w.(http.Flusher).Flush()
	select {
	case <-a.release:
		io.WriteString(w, "second")
		w.(http.Flusher).Flush()
	case <-r.Context().Done():
	}
	<-r.Context().Done()
	close(a.streamed)
}

func (a *fakeAgent) last() (calls int, query string, header http.Header, input string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls, a.query, a.header, a.input
}

// TestConsoleProxy: the server checks the user's token and project, then
// hands the request to the instance's host's agent, signed; every way the
// agent cannot be reached has its own clear error.
func TestConsoleProxy(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("console-test-password"), 0o600)
	clock := server.NewManualClock(time.Now())
	s, err := server.Start(context.Background(), server.Config{DataDir: dir, RaftBind: "127.0.0.1:0", HTTPBind: "127.0.0.1:0",
		BootstrapPasswordFile: pw, BcryptCost: 4, HostTTL: time.Minute, RaftTimeoutScale: 1, Clock: clock,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	admin := client.New(s.HTTPAddr(), "")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err = admin.Login(ctx, "admin", "console-test-password", "admin"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	must := func(_ uint64, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"p", "q"} {
		must(admin.Do(ctx, http.MethodPost, "/v1/projects", nil, api.ProjectRequest{Name: p}, nil))
	}
	users := map[string]*client.Client{}
	for _, u := range []struct{ name, project, role string }{{"m", "p", "member"}, {"r", "p", "reader"}, {"o", "q", "member"}} {
		must(admin.Do(ctx, http.MethodPost, "/v1/users", nil, api.UserRequest{Name: u.name, Password: "password-" + u.name, Project: u.project, Role: u.role}, nil))
		c := client.New(s.HTTPAddr(), "")
		if _, err := c.Login(ctx, u.name, "password-"+u.name, u.project); err != nil {
			t.Fatal(err)
		}
		users[u.name] = c
	}
	must(admin.Do(ctx, http.MethodPost, "/v1/flavors", nil, api.FlavorRequest{Name: "tiny", VCPUs: 1, MemoryMB: 64}, nil))
	must(admin.Do(ctx, http.MethodPost, "/v1/flavors", nil, api.FlavorRequest{Name: "huge", VCPUs: 1000, MemoryMB: 64}, nil))

	agent := newFakeAgent(t)
	// A port nothing listens on.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := ln.Addr().String()
	ln.Close()
	otherKey, _ := console.NewKey()
	m := users["m"]
	// create places one instance on host (the only enabled one).
	create := func(name, flavor string) *state.Instance {
		t.Helper()
		var out []api.InstanceView
		must(m.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: name, Flavor: flavor}, &out))
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			in, err := m.Instance(ctx, out[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			if in.State != state.InstancePending || time.Now().After(deadline) {
				return in
			}
		}
	}
	host := func(name, addr, key string) {
		t.Helper()
		var hosts []api.HostView
		admin.Do(ctx, http.MethodGet, "/v1/hosts", nil, nil, &hosts)
		for _, h := range hosts {
			must(admin.Do(ctx, http.MethodPost, "/v1/hosts/"+h.ID+"/disable", nil, struct{}{}, nil))
		}
		must(admin.Do(ctx, http.MethodPost, "/v1/hosts", nil, api.HostRequest{Name: name, VCPUs: 4, MemoryMB: 4096, ConsoleAddr: addr, ConsoleKey: key}, nil))
	}
	host("h1", agent.srv.Listener.Addr().String(), agent.key)
	web := create("web", "tiny")
	host("h2", "", "")
	plain := create("plain", "tiny")
	host("h3", closedAddr, otherKey)
	lost := create("lost", "tiny")
	huge := create("huge", "huge")
	gone := create("gone", "tiny")
	must(m.Do(ctx, http.MethodDelete, "/v1/instances/"+gone.ID, nil, nil, nil))

	// The key never leaves the servers.
	var raw json.RawMessage
	must(admin.Do(ctx, http.MethodGet, "/v1/hosts/h1", nil, nil, &raw))
	if strings.Contains(string(raw), agent.key) || !strings.Contains(string(raw), `"console_addr"`) {
		t.Fatalf("host h1 as the API shows it: %s", raw)
	}

	t.Run("streams through the server, signed, canonical", func(t *testing.T) {
		st, err := m.Console(ctx, web.ID, console.Options{Follow: true, Offset: -1, Tail: 10})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		got := make([]byte, len("first"))
		if _, err := io.ReadFull(st, got); err != nil || string(got) != "first" || st.Offset != 42 {
			t.Fatalf("read %q %v at %d", got, err, st.Offset)
		}
		// "first" came before the agent was allowed to send more: the
		// server streams, it does not buffer.
		close(agent.release)
		got = make([]byte, len("second"))
		if _, err := io.ReadFull(st, got); err != nil || string(got) != "second" {
			t.Fatalf("read %q %v", got, err)
		}
		st.Close()
		select {
		case <-agent.streamed:
		case <-time.After(10 * time.Second):
			t.Fatal("the agent's stream went on after the user left")
		}
		_, q, h, _ := agent.last()
		if q != "follow=1&tail=10" || h.Get(api.HeaderToken) != "" || h.Get("Authorization") != "" {
			t.Fatalf("the agent got query %q, headers %v", q, h)
		}
	})
	t.Run("input", func(t *testing.T) {
		if err := m.ConsoleInput(ctx, web.ID, strings.NewReader("ls\n")); err != nil {
			t.Fatal(err)
		}
		if _, _, _, in := agent.last(); in != "ls\n" {
			t.Fatalf("the agent got %q", in)
		}
	})

	tests := []struct {
		name   string
		as     *client.Client
		id     string
		query  string
		agent  int // the fake agent's answer
		status int
		code   string
		msg    string
		called bool   // the agent was asked
		sent   string // if set, the query the agent got
	}{
		{"raw query passes the parser", m, web.ID, "tail=3&follow=false&index=9", 0, 200, "", "", true, "tail=3"},
		{"reader may not", users["r"], web.ID, "", 0, 403, "", "member", false, ""},
		{"another project's instance is missing", users["o"], web.ID, "", 0, 404, "", "not found", false, ""},
		{"no token", client.New(s.HTTPAddr(), ""), web.ID, "", 0, 401, "", "", false, ""},
		{"bad offset", m, web.ID, "offset=-1", 0, 400, "", "offset", false, ""},
		{"offset and tail", m, web.ID, "offset=1&tail=1", 0, 400, "", "not both", false, ""},
		{"no such instance", m, "nope", "", 0, 404, "", "not found", false, ""},
		{"agent: out of range", m, web.ID, "offset=9", 416, 416, "", "host h1: agent says no", true, ""},
		{"agent: no console for it", m, web.ID, "", 404, 409, "", "host h1: agent says no", true, ""},
		{"agent refuses the signature", m, web.ID, "", 401, 502, api.CodeAgentError, "signature", true, ""},
		{"agent fails", m, web.ID, "", 500, 502, api.CodeAgentError, "agent says no", true, ""},
		{"agent without a console endpoint", m, plain.ID, "", 0, 409, "", "serves no console", false, ""},
		{"agent unreachable", m, lost.ID, "", 0, 502, api.CodeAgentUnreachable, "unreachable", false, ""},
		{"not placed", m, huge.ID, "", 0, 409, "", "not placed", false, ""},
		{"deleted", m, gone.ID, "", 0, 409, "", "deleted", false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			agent.mu.Lock()
			agent.status = tc.agent
			before := agent.calls
			agent.mu.Unlock()
			req, _ := http.NewRequest(http.MethodGet, "http://"+s.HTTPAddr()+"/v1/instances/"+tc.id+"/console?"+tc.query, nil)
			if tc.as.Token != "" {
				req.Header.Set(api.HeaderToken, tc.as.Token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, body, tc.status)
			}
			if tc.status != 200 {
				var eb api.ErrorBody
				if err := json.Unmarshal(body, &eb); err != nil || eb.Error.Code != tc.code || !strings.Contains(eb.Error.Message, tc.msg) {
					t.Fatalf("error %s, want code %q and %q", body, tc.code, tc.msg)
				}
			}
			calls, q, _, _ := agent.last()
			if (calls > before) != tc.called {
				t.Fatalf("agent called: %v, want %v", calls > before, tc.called)
			}
			if tc.sent != "" && q != tc.sent {
				t.Fatalf("the agent got query %q, want %q", q, tc.sent)
			}
		})
	}

	t.Run("input over the limit", func(t *testing.T) {
		// Of unknown length (chunked), so only the stream's end tells.
		body := io.MultiReader(strings.NewReader("x"), strings.NewReader(strings.Repeat("y", 1<<20)))
		err := m.ConsoleInput(ctx, web.ID, body)
		if !client.IsStatus(err, http.StatusRequestEntityTooLarge) {
			t.Fatalf("input of 1 MiB + 1: %v", err)
		}
	})
	t.Run("host down", func(t *testing.T) {
		clock.Advance(2 * time.Minute)
		_, err := m.Console(ctx, web.ID, console.Whole())
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != 409 || !strings.Contains(ae.Message, "down") {
			t.Fatalf("console of an instance on a down host: %v", err)
		}
		if err := m.ConsoleInput(ctx, web.ID, strings.NewReader("x")); !client.IsStatus(err, 409) {
			t.Fatalf("input to an instance on a down host: %v", err)
		}
	})
}
