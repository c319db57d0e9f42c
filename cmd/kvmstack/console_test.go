package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/console"
)

// echoAgent is a console endpoint whose guest printed bootLog and echoes
// every input as "input: ...".
type echoAgent struct {
	key    string
	v      *console.Verifier
	echoes chan string

	mu      sync.Mutex
	queries []string
}

const bootLog = "boot line\n"

func (a *echoAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := a.v.Verify(r); err != nil {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.Method == http.MethodPost {
		b, _ := io.ReadAll(r.Body)
		a.echoes <- "input: " + string(b)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	a.mu.Lock()
	a.queries = append(a.queries, r.URL.RawQuery)
	a.mu.Unlock()
	opts, err := console.ParseQuery(r.URL.Query())
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	start, err := opts.Start(int64(len(bootLog)))
	if err != nil {
		w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		io.WriteString(w, `{"error":{"status":416,"message":"`+err.Error()+`"}}`)
		return
	}
	w.Header().Set(console.HeaderOffset, strconv.FormatInt(start, 10))
	io.WriteString(w, bootLog[start:])
	if !opts.Follow {
		return
	}
	w.(http.Flusher).Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case s := <-a.echoes:
			io.WriteString(w, s)
			w.(http.Flusher).Flush()
		}
	}
}

// TestInstanceConsoleCLI runs `kvmstack instance console` against a server
// whose only host's agent is an echoAgent.
func TestInstanceConsoleCLI(t *testing.T) {
	run, admin, s := cliServerWith(t, nil)
	key, _ := console.NewKey()
	v, _ := console.NewVerifier(key, nil)
	agent := &echoAgent{key: key, v: v, echoes: make(chan string, 16)}
	as := httptest.NewServer(agent)
	defer as.Close()
	ctx := context.Background()
	if _, err := admin.Do(ctx, http.MethodPost, "/v1/hosts", nil, api.HostRequest{Name: "node1", VCPUs: 4, MemoryMB: 4096,
		ConsoleAddr: as.Listener.Addr().String(), ConsoleKey: key}, nil); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"flavor create m1 --vcpus 1 --memory 256", "instance create vm --flavor m1 --wait 10s"} {
		if _, err := run(cmd); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
	}
	tests := []struct {
		args, want, err, query string
	}{
		{"instance console vm", bootLog, "", ""},
		{"instance console vm --tail 5", "line\n", "", "tail=5"},
		{"instance console vm --offset 2", "ot line\n", "", "offset=2"},
		{"instance console vm --offset 99", "", "past the end", "offset=99"},
		{"instance console vm --tail -3", "", "must not be negative", ""},
		{"instance console vm --tail 1 --offset 1", "", "not both", ""},
		{"instance console nosuch", "", "not found", ""},
		{"instance console", "", "missing instance", ""},
	}
	for _, tc := range tests {
		agent.mu.Lock()
		agent.queries = nil
		agent.mu.Unlock()
		out, err := run(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want an error about %q", tc.args, err, tc.err)
			}
		} else if err != nil || out != tc.want {
			t.Errorf("%s: %q %v, want %q", tc.args, out, err, tc.want)
		}
		agent.mu.Lock()
		if tc.query != "" && (len(agent.queries) != 1 || agent.queries[0] != tc.query) {
			t.Errorf("%s: the agent got %q, want %q", tc.args, agent.queries, tc.query)
		}
		agent.mu.Unlock()
	}

	// Interactive: two lines typed, then Ctrl-]; what follows it is not sent.
	app := newApp()
	var out, errOut bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errOut
	app.Reader = strings.NewReader("uname\nls /\n\x1dreboot\n")
	argv := []string{"kvmstack", "--addr", s.HTTPAddr(), "--token", admin.Token, "instance", "console", "-i", "--tail", "0", "vm"}
	if err := app.Run(interspersed(app, argv)); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "input: uname\nls /\n" || !strings.Contains(errOut.String(), "Ctrl-]") {
		t.Fatalf("interactive console printed %q (stderr %q)", got, errOut.String())
	}
	if len(agent.echoes) != 0 {
		t.Fatalf("input after Ctrl-] was sent: %q", <-agent.echoes)
	}
}
