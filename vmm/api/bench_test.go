package api

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkRequests measures one request's round trip through the real
// server on a unix socket (kept-alive connection), with the fake machine.
// benchmarks/api prints the same as a table with percentiles.
func BenchmarkRequests(b *testing.B) {
	for _, r := range []struct{ name, method, path, body string }{
		{"GetVM", "GET", "/vm", ""},
		{"GetMetrics", "GET", "/metrics", ""},
		{"PutStateBadJSON", "PUT", "/vm/state", `{"state":`},
	} {
		b.Run(r.name, func(b *testing.B) {
			sock := filepath.Join(b.TempDir(), "api.sock")
			l, err := Listen(sock)
			if err != nil {
				b.Fatal(err)
			}
			s := NewServer(Options{})
			s.Attach(newFakeMachine("running"), testConfig())
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- s.Serve(ctx, l) }()
			c := unixClient(sock)
			b.ResetTimer()
			for b.Loop() {
				req, _ := http.NewRequest(r.method, "http://vmm"+r.path, strings.NewReader(r.body))
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 500 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			b.StopTimer()
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
