package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/server"
)

// TestNetworkCLI drives the network commands and instance create --network
// against a single in-process server.
func TestNetworkCLI(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("cli-network-password"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := server.Start(context.Background(), server.Config{DataDir: filepath.Join(dir, "data"), RaftBind: "127.0.0.1:0", HTTPBind: "127.0.0.1:0",
		BootstrapPasswordFile: pw, BcryptCost: 4, HostTTL: time.Hour, RaftTimeoutScale: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := client.New(s.HTTPAddr(), "")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err = c.Login(context.Background(), "admin", "cli-network-password", "admin"); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KVMSTACK_CONFIG_DIR", t.TempDir())
	run := func(args string) (string, error) {
		t.Helper()
		app := newApp()
		var out bytes.Buffer
		app.Writer, app.ErrWriter = &out, io.Discard
		argv := append([]string{"kvmstack", "--addr", s.HTTPAddr(), "--token", c.Token}, strings.Fields(args)...)
		err := app.Run(interspersed(app, argv))
		return out.String(), err
	}
	mustRun := func(args string) string {
		t.Helper()
		out, err := run(args)
		if err != nil {
			t.Fatalf("%s: %v", args, err)
		}
		return out
	}
	mustRun("flavor create f1 --vcpus 1 --memory 64")
	mustRun("host create h1 --vcpus 8 --memory 8192 --underlay-ip 192.0.2.7")
	mustRun("network create blue --cidr 10.20.0.0/24")
	mustRun("network create green --cidr 10.21.0.0/29")
	if _, err := run("network create red --cidr 10.20.0.128/25"); err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Fatalf("overlapping network: %v", err)
	}
	list := mustRun("network list")
	if !strings.Contains(list, "blue") || !strings.Contains(list, "10.21.0.0/29") || !strings.HasPrefix(list, "ID") {
		t.Fatalf("list:\n%s", list)
	}
	out := mustRun("instance create vm --flavor f1 --network blue --network green")
	if !strings.Contains(out, "10.20.0.3,10.21.0.3") {
		t.Fatalf("create output lacks the addresses:\n%s", out)
	}
	var show map[string]any
	if err := json.Unmarshal([]byte(mustRun("network show green -o json")), &show); err != nil || show["ports"] != 1.0 || show["addresses"] != 4.0 || show["gateway"] != "10.21.0.1" {
		t.Fatalf("show: %v %v", show, err)
	}
	if ports := mustRun("network ports blue"); !strings.Contains(ports, "10.20.0.3") {
		t.Fatalf("ports:\n%s", ports)
	}
	if _, err := run("network delete blue"); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("delete with ports: %v", err)
	}
	var insts []map[string]any
	if err := json.Unmarshal([]byte(mustRun("instance list -o json")), &insts); err != nil || len(insts) != 1 {
		t.Fatalf("instances %v %v", insts, err)
	}
	id := insts[0]["id"].(string)
	if nics := mustRun("instance ports " + id); !strings.Contains(nics, "10.21.0.3") {
		t.Fatalf("instance ports:\n%s", nics)
	}
	mustRun("instance delete " + id)
	mustRun("network delete blue")
	mustRun("network delete green")
	if list := mustRun("network list"); strings.Contains(list, "blue") {
		t.Fatalf("deleted network listed:\n%s", list)
	}
}
