package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/state"
)

const testPassword = "test-admin-password"

func startServer(t *testing.T, dir string, join []string, token string) *Server {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte(testPassword), 0o600)
	s, err := Start(context.Background(), Config{
		DataDir: dir, RaftBind: "127.0.0.1:0", HTTPBind: "127.0.0.1:0", Join: join, JoinToken: token,
		BootstrapPasswordFile: pwFile, BcryptCost: 4, HostTTL: time.Hour, BootstrapExpect: 3,
		Logger: slog.New(slog.NewTextHandler(testLog(), nil)), RaftLogOutput: testLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func login(t *testing.T, addr string) *client.Client {
	t.Helper()
	c := client.New(addr, "")
	var err error
	waitFor(t, "admin login", 30*time.Second, func() bool {
		_, err = c.Login(context.Background(), "admin", testPassword, "admin")
		return err == nil
	})
	return c
}

// TestThreeServersInProcess checks bootstrap, joins, forwarding from
// followers, scheduling and blob replication end to end.
func TestThreeServersInProcess(t *testing.T) {
	ctx := context.Background()
	s1 := startServer(t, t.TempDir(), nil, "")
	admin := login(t, s1.HTTPAddr())
	s2 := startServer(t, t.TempDir(), []string{s1.HTTPAddr()}, admin.Token)
	s3 := startServer(t, t.TempDir(), []string{s1.HTTPAddr()}, admin.Token)
	waitFor(t, "three voters", 30*time.Second, func() bool {
		ms, err := s1.Node().Members()
		return err == nil && len(ms) == 3
	})
	// Writes through a follower are forwarded to the leader.
	f := client.New(s3.HTTPAddr(), admin.Token)
	var fl state.Flavor
	if _, err := f.Do(ctx, http.MethodPost, "/v1/flavors", nil, api.FlavorRequest{Name: "m1", VCPUs: 2, MemoryMB: 1024, DiskGB: 5}, &fl); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"h1", "h2"} {
		if _, err := client.New([]string{s2.HTTPAddr(), s3.HTTPAddr()}[i], admin.Token).Do(ctx, http.MethodPost, "/v1/hosts", nil,
			api.HostRequest{Name: name, VCPUs: 4, MemoryMB: 2048, DiskGB: 100, CPURatio: 1, RAMRatio: 1}, nil); err != nil {
			t.Fatal(err)
		}
	}
	var created []*state.Instance
	if _, err := f.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: "vm", Flavor: "m1", Count: 5}, &created); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	list, err := client.New(s2.HTTPAddr(), admin.Token).WaitInstances(wctx, url.Values{"stale": {""}}, func(l []*state.Instance) bool {
		n := 0
		for _, in := range l {
			if in.State != state.InstancePending {
				n++
			}
		}
		return n == 5
	})
	if err != nil {
		t.Fatal(err)
	}
	placed, failed := 0, 0
	for _, in := range list {
		switch in.State {
		case state.InstanceScheduled:
			placed++
		case state.InstanceError:
			failed++
		}
	}
	if placed != 4 || failed != 1 {
		t.Fatalf("placed %d failed %d, want 4 and 1 (2 hosts x 2 slots)", placed, failed)
	}

	// Upload through a follower; the bytes must reach every server.
	data := bytes.Repeat([]byte("disk"), 50000)
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	img, err := f.UploadImage(ctx, "disk1", state.ImageDisk, "", digest, bytes.NewReader(data), int64(len(data)), nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "blob replication", 30*time.Second, func() bool {
		return s1.blobs.Has(digest) && s2.blobs.Has(digest) && s3.blobs.Has(digest)
	})
	var got bytes.Buffer
	if err := client.New(s2.HTTPAddr(), admin.Token).DownloadImage(ctx, img.ID, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("download: %v (%d bytes)", err, got.Len())
	}
}

// testLog shows server logs with -v when KVMSTACK_TEST_LOG is set.
func testLog() io.Writer {
	if os.Getenv("KVMSTACK_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

func TestGracefulLeave(t *testing.T) {
	s1 := startServer(t, t.TempDir(), nil, "")
	admin := login(t, s1.HTTPAddr())
	s2 := startServer(t, t.TempDir(), []string{s1.HTTPAddr()}, admin.Token)
	s3 := startServer(t, t.TempDir(), []string{s1.HTTPAddr()}, admin.Token)
	waitFor(t, "three voters", 30*time.Second, func() bool {
		ms, err := s1.Node().Members()
		return err == nil && len(ms) == 3
	})
	for _, s := range []*Server{s2, s3} {
		waitFor(t, "follower caught up", 30*time.Second, func() bool {
			ms, err := s.Node().Members()
			keys, _ := s.Store().Read(nil).SigningKeys()
			return err == nil && len(ms) == 3 && len(keys) > 0
		})
	}
	start := time.Now()
	if err := s3.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The leader leaves too: it hands over leadership first.
	if err := s1.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	ms, err := s2.Node().Members()
	if err != nil || len(ms) != 1 || ms[0].ID != s2.ID() {
		t.Fatalf("members after two leaves: %+v %v", ms, err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("leaving took %s", d)
	}
}
