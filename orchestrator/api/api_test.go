package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/server"
	"kvmstack/orchestrator/state"
)

var (
	once   sync.Once
	single *server.Server
	token  string
	member string
)

// singleServer starts one bootstrapped server shared by the tests of this
// package, with an admin token and a member token for project "p".
func singleServer(tb testing.TB) (*server.Server, string, string) {
	once.Do(func() {
		dir, err := os.MkdirTemp("", "kvmstack-api-")
		if err != nil {
			tb.Fatal(err)
		}
		pw := filepath.Join(dir, "pw")
		os.WriteFile(pw, []byte("api-test-password"), 0o600)
		s, err := server.Start(context.Background(), server.Config{DataDir: dir, RaftBind: "127.0.0.1:0", HTTPBind: "127.0.0.1:0",
			BootstrapPasswordFile: pw, BcryptCost: 4, HostTTL: time.Hour, MaxImageBytes: 1 << 20, RaftTimeoutScale: 1,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard})
		if err != nil {
			tb.Fatal(err)
		}
		ctx := context.Background()
		c := client.New(s.HTTPAddr(), "")
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err = c.Login(ctx, "admin", "api-test-password", "admin"); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			tb.Fatal(err)
		}
		must := func(_ uint64, err error) {
			if err != nil {
				tb.Fatal(err)
			}
		}
		must(c.Do(ctx, http.MethodPost, "/v1/projects", nil, api.ProjectRequest{Name: "p"}, nil))
		must(c.Do(ctx, http.MethodPost, "/v1/users", nil, api.UserRequest{Name: "m", Password: "member-password", Project: "p", Role: "member"}, nil))
		must(c.Do(ctx, http.MethodPost, "/v1/flavors", nil, api.FlavorRequest{Name: "tiny", VCPUs: 1, MemoryMB: 64}, nil))
		mc := client.New(s.HTTPAddr(), "")
		if _, err := mc.Login(ctx, "m", "member-password", "p"); err != nil {
			tb.Fatal(err)
		}
		single, token, member = s, c.Token, mc.Token
	})
	if single == nil {
		tb.Fatal("server did not start")
	}
	return single, token, member
}

func post(tb testing.TB, addr, path, tok string, body []byte) (int, []byte) {
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	req.Header.Set(api.HeaderToken, tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestBlockingQuery(t *testing.T) {
	s, _, tok := singleServer(t)
	ctx := context.Background()
	c := client.New(s.HTTPAddr(), tok)
	var list []*state.Instance
	idx, err := c.Do(ctx, http.MethodGet, "/v1/instances", nil, nil, &list)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		var l []*state.Instance
		q := map[string][]string{"index": {itoa(idx)}, "wait": {"20s"}}
		c.Do(ctx, http.MethodGet, "/v1/instances", q, nil, &l)
		done <- time.Since(start)
	}()
	select {
	case <-done:
		t.Fatal("blocking query returned before any change")
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := c.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: "wake", Flavor: "tiny"}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-done:
		if d > 10*time.Second {
			t.Fatalf("blocking query took %s", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("blocking query did not wake on a change")
	}
	// A short wait with no change returns the unchanged index.
	q := map[string][]string{"index": {"999999999"}, "wait": {"100ms"}}
	if _, err := c.Do(ctx, http.MethodGet, "/v1/instances", q, nil, &list); err != nil {
		t.Fatal(err)
	}
}

func itoa(n uint64) string { b, _ := json.Marshal(n); return string(b) }

func TestMetricsEndpoint(t *testing.T) {
	s, _, _ := singleServer(t)
	resp, err := http.Get("http://" + s.HTTPAddr() + "/v1/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"kvmstack_api_requests_total", "kvmstack_raft_apply_seconds", `kvmstack_raft{stat="state"} 2`, "kvmstack_scheduler_placements_total"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// FuzzInstanceBody posts arbitrary bodies to the instance endpoint: the
// server must answer every one with a JSON body and never a 5xx.
func FuzzInstanceBody(f *testing.F) {
	for _, seed := range []string{
		`{"name":"a","flavor":"tiny"}`, `{"name":"a","flavor":"tiny","count":3,"metadata":{"k":"v"}}`,
		`{"name":"a","flavor":"nope"}`, `{"name":"","flavor":"tiny"}`, `{"count":-1}`, `[]`, `null`, `{"name":"a"}{"x":1}`,
		`{"name":"a","flavor":"tiny","server_group":"zzz"}`, "\x00\xff",
		`{"name":"a","flavor":"tiny","networks":["nope"]}`, `{"name":"a","flavor":"tiny","networks":[1]}`,
		`{"name":"a","flavor":"tiny","networks":["a","b","c","d","e","f","g","h","i"]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s, _, tok := singleServer(t)
		code, out := post(t, s.HTTPAddr(), "/v1/instances", tok, body)
		if code >= 500 {
			t.Fatalf("status %d for %q: %s", code, body, out)
		}
		if !json.Valid(out) {
			t.Fatalf("non-JSON answer %q for %q", out, body)
		}
	})
}

// FuzzTokenBody does the same for the unauthenticated login endpoint.
func FuzzTokenBody(f *testing.F) {
	for _, seed := range []string{`{"user":"m","password":"member-password","project":"p"}`, `{"user":"m","password":"x","project":"p","ttl":"-1s"}`, `{`, `{"ttl":"1y"}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s, _, _ := singleServer(t)
		code, out := post(t, s.HTTPAddr(), "/v1/auth/tokens", "", body)
		if code >= 500 || !json.Valid(out) {
			t.Fatalf("status %d answer %q for %q", code, out, body)
		}
	})
}
