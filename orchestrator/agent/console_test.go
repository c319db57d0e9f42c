package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/console"
	"kvmstack/orchestrator/state"
)

// consoleFixture is a console endpoint over a temporary instances
// directory, with the key its signatures need.
type consoleFixture struct {
	t       *testing.T
	svc     *consoleService
	key     string
	instDir string
	srv     *httptest.Server
}

func newConsoleFixture(t *testing.T, known ...string) *consoleFixture {
	t.Helper()
	return newConsoleFixtureWith(t, func(svc *consoleService) {
		svc.known = func(id string) bool {
			for _, k := range known {
				if k == id {
					return true
				}
			}
			return false
		}
	})
}

// newConsoleFixtureWith is newConsoleFixture with the service adjusted by
// tune before it serves.
func newConsoleFixtureWith(t *testing.T, tune func(*consoleService)) *consoleFixture {
	t.Helper()
	key, err := console.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	v, err := console.NewVerifier(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &consoleFixture{t: t, key: key, instDir: t.TempDir()}
	f.svc = &consoleService{instDir: f.instDir, keep: 3, poll: 5 * time.Millisecond, inputTimeout: 200 * time.Millisecond, verify: v,
		known: func(string) bool { return false }, log: testLogger(t)}
	tune(f.svc)
	f.srv = httptest.NewServer(f.svc.handler())
	t.Cleanup(f.srv.Close)
	return f
}

// dir makes instance id's directory with the given files.
func (f *consoleFixture) dir(id string, files map[string]string) string {
	f.t.Helper()
	d := filepath.Join(f.instDir, id)
	if err := os.MkdirAll(d, 0o700); err != nil {
		f.t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o600); err != nil {
			f.t.Fatal(err)
		}
	}
	return d
}

// do sends a request signed with key (the fixture's if empty; "-" leaves
// it unsigned) to path?query.
func (f *consoleFixture) do(ctx context.Context, method, path, query, key string, body io.Reader) *http.Response {
	f.t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, f.srv.URL+path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	req.URL.RawQuery = query
	if key == "" {
		key = f.key
	}
	if key != "-" {
		if err := console.Sign(req, key, time.Now()); err != nil {
			f.t.Fatal(err)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestConsoleOutput(t *testing.T) {
	f := newConsoleFixture(t, "building")
	f.dir("i1", map[string]string{fileConsole + ".2": "aaaa", fileConsole + ".1": "bbbb", fileConsole: "cccc",
		// Beyond keep (3 here) nothing is read; .4 behind a gap neither.
		fileConsole + ".5": "zzzz"})
	f.dir("fresh", nil)
	other, _ := console.NewKey()
	tests := []struct {
		name, path, query, key string
		status                 int
		body                   string // for 200: the bytes; else a part of the error
		offset                 string
	}{
		{"whole retained log, oldest first", "/v1/instances/i1/console", "", "", 200, "aaaabbbbcccc", "0"},
		{"offset inside a rotated copy", "/v1/instances/i1/console", "offset=6", "", 200, "bbcccc", "6"},
		{"offset at the end", "/v1/instances/i1/console", "offset=12", "", 200, "", "12"},
		{"tail across files", "/v1/instances/i1/console", "tail=5", "", 200, "bcccc", "7"},
		{"tail longer than the log", "/v1/instances/i1/console", "tail=1000", "", 200, "aaaabbbbcccc", "0"},
		{"tail 0", "/v1/instances/i1/console", "tail=0", "", 200, "", "12"},
		{"no log yet", "/v1/instances/fresh/console", "", "", 200, "", "0"},
		{"supervised, no directory yet", "/v1/instances/building/console", "", "", 200, "", "0"},
		{"offset past the end", "/v1/instances/i1/console", "offset=13", "", 416, "past the end", ""},
		{"negative offset", "/v1/instances/i1/console", "offset=-1", "", 400, "offset", ""},
		{"offset and tail", "/v1/instances/i1/console", "offset=1&tail=1", "", 400, "not both", ""},
		{"huge tail", "/v1/instances/i1/console", "tail=99999999999999999999", "", 400, "tail", ""},
		{"repeated offset", "/v1/instances/i1/console", "offset=1&offset=2", "", 400, "2 times", ""},
		{"follow not a boolean", "/v1/instances/i1/console", "follow=maybe", "", 400, "follow", ""},
		{"unknown instance", "/v1/instances/nope/console", "", "", 404, "no console on this host", ""},
		{"escaping id", "/v1/instances/..%2F..%2Fetc/console", "", "", 400, "malformed instance id", ""},
		{"dot id", "/v1/instances/./console", "", "", 400, "", ""},
		{"unsigned", "/v1/instances/i1/console", "", "-", 401, "no valid", ""},
		{"signed with another key", "/v1/instances/i1/console", "", other, 401, "bad signature", ""},
		{"unknown route, unsigned", "/v1/other", "", "-", 401, "", ""},
		{"unknown route, signed", "/v1/other", "", "", 404, "no such endpoint", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.do(context.Background(), http.MethodGet, tc.path, tc.query, tc.key, nil)
			body := readAll(t, resp)
			if resp.StatusCode != tc.status {
				// "." is cleaned by the mux into a redirect: anything but
				// a 200 with a log is fine there.
				if !(tc.name == "dot id" && resp.StatusCode != 200) {
					t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.status)
				}
				return
			}
			if tc.status == 200 {
				if body != tc.body || resp.Header.Get(console.HeaderOffset) != tc.offset {
					t.Fatalf("body %q offset %q, want %q at %q", body, resp.Header.Get(console.HeaderOffset), tc.body, tc.offset)
				}
				return
			}
			var eb api.ErrorBody
			if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Error.Status != tc.status || !strings.Contains(eb.Error.Message, tc.body) {
				t.Fatalf("error body %q, want status %d and %q", body, tc.status, tc.body)
			}
		})
	}
}

// TestConsoleLogPoll drives a follower through each way the log can change
// between two polls, deterministically.
func TestConsoleLogPoll(t *testing.T) {
	type step struct {
		do   func(path string, w *os.File) // change the files
		want string                        // what the next poll sends
	}
	write := func(s string) func(string, *os.File) {
		return func(_ string, w *os.File) { w.WriteString(s) }
	}
	rotate := func(path string, _ *os.File) {
		if err := rotateConsole(path, 0, 3); err != nil {
			t.Fatal(err)
		}
	}
	then := func(fs ...func(string, *os.File)) func(string, *os.File) {
		return func(p string, w *os.File) {
			for _, f := range fs {
				f(p, w)
			}
		}
	}
	copyOnly := func(path string, _ *os.File) {
		// The first half of a rotation: the copy, not yet the truncation.
		b, _ := os.ReadFile(path)
		os.Rename(path+".1", path+".2")
		os.WriteFile(path+".1", b, 0o600)
	}
	finishRotation := func(path string, w *os.File) {
		// The rest: what was written after the copy goes to the copy too,
		// then the truncation.
		b, _ := os.ReadFile(path)
		os.WriteFile(path+".1", b, 0o600)
		os.Truncate(path, 0)
	}
	tests := []struct {
		name    string
		initial string
		steps   []step
	}{
		{"appends", "boot\n", []step{{write("a\n"), "a\n"}, {nil, ""}, {write("b\nc\n"), "b\nc\n"}}},
		{"rotation seen after the truncation", "0123456789", []step{
			{then(write("ab"), rotate), "ab"},
			{write("new"), "new"},
		}},
		{"rotation with unsent bytes, then growth", "0123456789", []step{
			{then(write("ab"), rotate, write("x")), "abx"},
		}},
		{"truncated and regrown past the position", "0123", []step{
			{then(write("ab"), rotate, write("a much longer new log")), "aba much longer new log"},
		}},
		{"regrown with a prefix like the old log's", "0123456789", []step{
			// Same bytes at the start, different ones before the position.
			{then(rotate, write("0123456780xyz")), "0123456780xyz"},
		}},
		{"rotation caught between copy and truncation", "0123456789", []step{
			{then(copyOnly, write("mid")), "mid"},
			{then(finishRotation, write("after")), "after"},
		}},
		{"two rotations between polls", "0123456789", []step{
			{then(write("ab"), rotate, write("x"), rotate, write("y")), "abxy"},
		}},
		{"more rotations between polls than copies kept: lost, nothing repeated", "0123456789", []step{
			{then(write("ab"), rotate, write("1"), rotate, write("2"), rotate, write("3"), rotate, write("4")), "4"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), fileConsole)
			w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			w.WriteString(tc.initial)
			l, err := openConsoleLog(path, 3)
			if err != nil {
				t.Fatal(err)
			}
			defer l.close()
			var out bytes.Buffer
			if err := l.sendFrom(0, &out); err != nil || out.String() != tc.initial {
				t.Fatalf("initial %q %v", out.String(), err)
			}
			for i, s := range tc.steps {
				if s.do != nil {
					s.do(path, w)
				}
				out.Reset()
				if _, err := l.poll(&out); err != nil {
					t.Fatal(err)
				}
				if out.String() != s.want {
					t.Fatalf("step %d sent %q, want %q", i, out.String(), s.want)
				}
			}
		})
	}
}

// TestConsoleLogAppears: a follower of an instance without a log yet gets
// its bytes once vmm creates it, and the stream ends when the instance's
// directory is removed.
func TestConsoleLogAppears(t *testing.T) {
	var deleted atomic.Bool
	f := newConsoleFixtureWith(t, func(svc *consoleService) {
		svc.known = func(id string) bool { return id == "later" && !deleted.Load() }
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := f.do(ctx, http.MethodGet, "/v1/instances/later/console", "follow=1", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	dir := f.dir("later", map[string]string{fileConsole: "booting\n"})
	got := make([]byte, len("booting\n"))
	if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != "booting\n" {
		t.Fatalf("read %q %v", got, err)
	}
	// Deleted: the directory goes and the agent stops supervising it.
	deleted.Store(true)
	os.RemoveAll(dir)
	if rest := readAll(t, resp); rest != "" || ctx.Err() != nil {
		t.Fatalf("after deletion: %q, %v", rest, ctx.Err())
	}
}

// TestConsoleFollowRotation follows a log over HTTP while a writer appends
// numbered lines and rotations happen at any moment (writer and rotations
// take turns, as one vmm write and one rotateConsole never lose bytes
// then): every line must arrive once, in order.
func TestConsoleFollowRotation(t *testing.T) {
	f := newConsoleFixture(t)
	dir := f.dir("i1", nil)
	path := filepath.Join(dir, fileConsole)
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fmt.Fprintf(w, "line 0\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp := f.do(ctx, http.MethodGet, "/v1/instances/i1/console", "follow=1&offset=0", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	const lines = 3000
	var wg sync.WaitGroup
	wg.Add(1)
	rotations := 0
	go func() {
		defer wg.Done()
		for i := 1; i < lines; i++ {
			fmt.Fprintf(w, "line %d %s\n", i, strings.Repeat("x", i%97))
			switch {
			case i%250 == 0:
				// Let the follower catch up, then rotate under it.
				time.Sleep(15 * time.Millisecond)
				fallthrough
			case i%83 == 0:
				if err := rotateConsole(path, 100, 3); err != nil {
					t.Error(err)
				}
				rotations++
			case i%10 == 0:
				time.Sleep(time.Millisecond)
			}
		}
	}()
	var got bytes.Buffer
	buf := make([]byte, 4096)
	want := fmt.Sprintf("line %d ", lines-1)
	for !bytes.Contains(got.Bytes(), []byte(want)) || !bytes.HasSuffix(got.Bytes(), []byte("\n")) {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("stream ended after %d bytes: %v", got.Len(), err)
		}
	}
	wg.Wait()
	resp.Body.Close()
	gotLines := strings.Split(strings.TrimSuffix(got.String(), "\n"), "\n")
	for i, l := range gotLines {
		n, _, _ := strings.Cut(strings.TrimPrefix(l, "line "), " ")
		if n != strconv.Itoa(i) {
			t.Fatalf("line %d of the stream is %q (after %d rotations)", i, l, rotations)
		}
	}
	if len(gotLines) != lines {
		t.Fatalf("%d lines, want %d", len(gotLines), lines)
	}
	t.Logf("%d lines across %d rotations", lines, rotations)
}

func TestConsoleInput(t *testing.T) {
	f := newConsoleFixture(t)
	// i1's vmm holds the FIFO read-write, as startVMM arranges.
	running := f.dir("running", nil)
	if err := unix.Mkfifo(filepath.Join(running, fileConsoleIn), 0o600); err != nil {
		t.Fatal(err)
	}
	vmmEnd, err := os.OpenFile(filepath.Join(running, fileConsoleIn), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer vmmEnd.Close()
	// A FIFO nobody holds: the vmm is gone.
	stopped := f.dir("stopped", nil)
	unix.Mkfifo(filepath.Join(stopped, fileConsoleIn), 0o600)
	f.dir("never", nil)
	f.dir("plain", map[string]string{fileConsoleIn: "not a fifo"})
	// A vmm that does not read: the pipe fills.
	stuck := f.dir("stuck", nil)
	unix.Mkfifo(filepath.Join(stuck, fileConsoleIn), 0o600)
	stuckEnd, err := os.OpenFile(filepath.Join(stuck, fileConsoleIn), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer stuckEnd.Close()

	tests := []struct {
		name, id string
		body     []byte
		key      string
		status   int
		msg      string
	}{
		{"typed line", "running", []byte("ls -l\n"), "", 204, ""},
		{"empty", "running", nil, "", 204, ""},
		{"unsigned", "running", []byte("rm -rf /\n"), "-", 401, "no valid"},
		{"vmm not running", "stopped", []byte("x"), "", 409, "not running"},
		{"never started", "never", []byte("x"), "", 409, "not been started"},
		{"not a FIFO", "plain", []byte("x"), "", 500, "not a FIFO"},
		{"unknown instance", "ghost", []byte("x"), "", 404, "no console"},
		{"too large", "running", bytes.Repeat([]byte("y"), consoleInputMax+1), "", 413, "exceeds"},
		{"not read by the vmm", "stuck", bytes.Repeat([]byte("z"), 512<<10), "", 409, "not read by the vmm"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.do(context.Background(), http.MethodPost, "/v1/instances/"+tc.id+"/console", "", tc.key, bytes.NewReader(tc.body))
			body := readAll(t, resp)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.msg) {
				t.Fatalf("status %d %q, want %d %q", resp.StatusCode, body, tc.status, tc.msg)
			}
			if tc.status == 204 && len(tc.body) > 0 {
				got := make([]byte, len(tc.body))
				vmmEnd.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(vmmEnd, got); err != nil || !bytes.Equal(got, tc.body) {
					t.Fatalf("the vmm read %q %v", got, err)
				}
			}
		})
	}
	// Nothing of the refused inputs reached the running vmm.
	vmmEnd.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := vmmEnd.Read(make([]byte, 1)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("unexpected input: %d %v", n, err)
	}
}

// FuzzConsoleRequest sends signed requests with arbitrary instance ids and
// queries: the endpoint answers 200, 400, 404 or 416, never anything else,
// and never reads outside the instances directory (a console.log planted
// beside it must not come back).
func FuzzConsoleRequest(f *testing.F) {
	for _, s := range [][2]string{{"i1", ""}, {"i1", "tail=3"}, {"..", "offset=1"}, {"%2e%2e", ""}, {"i1%2F..%2F..", "tail=1"},
		{"i1", "offset=99999999999999999999"}, {"i1", "follow=1&tail=2"}, {"", ""}, {"a%00b", ""}} {
		f.Add(s[0], s[1])
	}
	key, _ := console.NewKey()
	v, _ := console.NewVerifier(key, nil)
	root := f.TempDir()
	instDir := filepath.Join(root, "instances")
	os.MkdirAll(filepath.Join(instDir, "i1"), 0o700)
	os.WriteFile(filepath.Join(instDir, "i1", fileConsole), []byte("guest"), 0o600)
	os.WriteFile(filepath.Join(root, fileConsole), []byte("SECRET"), 0o600)
	svc := &consoleService{instDir: instDir, keep: 3, poll: time.Millisecond, verify: v, known: func(string) bool { return false },
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	h := svc.handler()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	f.Fuzz(func(t *testing.T, id, query string) {
		u := &url.URL{Scheme: "http", Host: "agent", Path: "/v1/instances/" + id + "/console", RawQuery: query}
		req, err := http.NewRequestWithContext(cancelled, http.MethodGet, u.String(), nil)
		if err != nil {
			return
		}
		if err := console.Sign(req, key, time.Now()); err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 400, 404, 416, 301, 307, 308:
		default:
			t.Fatalf("%q %q: status %d %s", id, query, rec.Code, rec.Body)
		}
		if strings.Contains(rec.Body.String(), "SECRET") {
			t.Fatalf("%q %q read outside the instances directory", id, query)
		}
	})
}

// TestConsoleThroughServer runs the whole path: an agent serving consoles
// registers its endpoint, the fake vmm prints its boot line, and a user's
// console request through the server gets the log, follows it, and sees
// the guest echo what it typed through the server. The stream ends when
// the instance is deleted; with the agent gone, the server answers 502.
func TestConsoleThroughServer(t *testing.T) {
	c := newCluster(t, 1)
	data := t.TempDir()
	stop := c.startAgent(data, func(cfg *Config) { cfg.ConsoleListen = "127.0.0.1:0" })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	id := c.create("talky", api.InstanceRequest{Image: c.disk.ID})
	other := c.create("quiet", api.InstanceRequest{})
	c.waitState(id, state.InstanceRunning, nil)
	c.waitState(other, state.InstanceRunning, nil)

	h, _ := c.srv.Store().Read(nil).Host("node1")
	key, _ := os.ReadFile(filepath.Join(data, fileConsoleKey))
	if !strings.HasPrefix(h.ConsoleAddr, "127.0.0.1:") || h.ConsoleKey != strings.TrimSpace(string(key)) {
		t.Fatalf("registered console %q with key %q; the agent's key file has %q", h.ConsoleAddr, h.ConsoleKey, key)
	}

	st, err := c.admin.Console(ctx, id, console.Whole())
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(st)
	st.Close()
	if err != nil || !strings.Contains(string(b), "fake vmm") || !strings.Contains(string(b), "booted") {
		t.Fatalf("console log %q %v", b, err)
	}

	st, err = c.admin.Console(ctx, id, console.Options{Follow: true, Offset: -1, Tail: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.Offset != int64(len(b)) {
		t.Errorf("tail=0 starts at %d, want the end (%d)", st.Offset, len(b))
	}
	typed := time.Now()
	if err := c.admin.ConsoleInput(ctx, id, strings.NewReader("hello console\n")); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	buf := make([]byte, 1024)
	for !strings.Contains(got.String(), "input: hello console\n") {
		n, err := st.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("follow ended with %q: %v", got.String(), err)
		}
	}
	t.Logf("input to its echo through server and agent: %s", time.Since(typed))

	// Deleting the instance ends its followers.
	c.admin.Do(ctx, http.MethodDelete, "/v1/instances/"+id, nil, nil, nil)
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, st)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("follow of a deleted instance: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the follow did not end when the instance was deleted")
	}

	stop()
	_, err = c.admin.Console(ctx, other, console.Whole())
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusBadGateway || ae.Code != api.CodeAgentUnreachable {
		t.Fatalf("console with the agent stopped: %v", err)
	}
}

func TestAdvertisedAddr(t *testing.T) {
	tests := []struct {
		listen   string
		underlay string
		want     func(string) bool
	}{
		{"127.0.0.1:8482", "192.0.2.1", func(s string) bool { return s == "127.0.0.1:8482" }},
		{"[::1]:9", "", func(s string) bool { return s == "[::1]:9" }},
		{"0.0.0.0:8482", "192.0.2.1", func(s string) bool { return s == "192.0.2.1:8482" }},
		{"[::]:8482", "2001:db8::7", func(s string) bool { return s == "[2001:db8::7]:8482" }},
		// Without an underlay address: some address of this machine, or
		// its name, with the port.
		{"0.0.0.0:8482", "", func(s string) bool { h, p, err := net.SplitHostPort(s); return err == nil && h != "" && p == "8482" }},
	}
	for _, tc := range tests {
		a, err := net.ResolveTCPAddr("tcp", tc.listen)
		if err != nil {
			t.Fatal(err)
		}
		if got := advertisedAddr(a, tc.underlay); !tc.want(got) {
			t.Errorf("listening on %s, underlay %q: advertised %q", tc.listen, tc.underlay, got)
		}
	}
}

// TestConsoleKeyFile: the key is made once and kept across restarts; a
// damaged key file is replaced (the next registration carries the new key).
func TestConsoleKeyFile(t *testing.T) {
	dir := t.TempDir()
	k1, err := loadConsoleKey(dir)
	if err != nil || !console.ValidKey(k1) {
		t.Fatalf("first key %q %v", k1, err)
	}
	if st, err := os.Stat(filepath.Join(dir, fileConsoleKey)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	if k2, err := loadConsoleKey(dir); err != nil || k2 != k1 {
		t.Fatalf("after a restart: %q %v, want %q", k2, err, k1)
	}
	os.WriteFile(filepath.Join(dir, fileConsoleKey), []byte("garbage\n"), 0o600)
	if k3, err := loadConsoleKey(dir); err != nil || !console.ValidKey(k3) || k3 == k1 {
		t.Fatalf("after damage: %q %v", k3, err)
	}
}

// TestConsoleInputWakesFollowers: with a poll interval no test would wait
// for, a follower still sees the echo of input typed through the endpoint:
// input wakes it and speeds it up.
func TestConsoleInputWakesFollowers(t *testing.T) {
	f := newConsoleFixtureWith(t, func(svc *consoleService) { svc.poll, svc.typingPoll = time.Hour, 5*time.Millisecond })
	dir := f.dir("i1", map[string]string{fileConsole: "login: "})
	if err := unix.Mkfifo(filepath.Join(dir, fileConsoleIn), 0o600); err != nil {
		t.Fatal(err)
	}
	vmmEnd, err := os.OpenFile(filepath.Join(dir, fileConsoleIn), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer vmmEnd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp := f.do(ctx, http.MethodGet, "/v1/instances/i1/console", "follow=1", "", nil)
	defer resp.Body.Close()
	got := make([]byte, len("login: "))
	if _, err := io.ReadFull(resp.Body, got); err != nil {
		t.Fatal(err)
	}
	if r := f.do(ctx, http.MethodPost, "/v1/instances/i1/console", "", "", strings.NewReader("root\n")); r.StatusCode != 204 {
		t.Fatalf("input: %d %s", r.StatusCode, readAll(t, r))
	}
	// The guest echoes a moment later, after the follower's first look.
	typed := make([]byte, 5)
	io.ReadFull(vmmEnd, typed)
	time.Sleep(20 * time.Millisecond)
	os.WriteFile(filepath.Join(dir, fileConsole), []byte("login: root\n"), 0o600)
	echo := make([]byte, len("root\n"))
	if _, err := io.ReadFull(resp.Body, echo); err != nil || string(echo) != "root\n" {
		t.Fatalf("echo %q %v", echo, err)
	}
}
