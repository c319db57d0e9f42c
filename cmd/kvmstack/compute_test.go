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
	"kvmstack/orchestrator/state"
)

// cliServer starts a single-node server, logs in as its admin, and returns
// a function running one kvmstack command line against it.
func cliServer(t *testing.T) (run func(args string) (string, error), admin *client.Client) {
	t.Helper()
	run, admin, _ = cliServerWith(t, nil)
	return run, admin
}

// cliServerWith is cliServer with the server's configuration adjusted by
// tune first (a fake clock, a short host TTL), and also returns the server.
func cliServerWith(t *testing.T, tune func(*server.Config)) (run func(args string) (string, error), admin *client.Client, s *server.Server) {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("cli-compute-password"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{DataDir: filepath.Join(dir, "data"), RaftBind: "127.0.0.1:0", HTTPBind: "127.0.0.1:0",
		BootstrapPasswordFile: pw, BcryptCost: 4, HostTTL: time.Hour, RaftTimeoutScale: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard}
	if tune != nil {
		tune(&cfg)
	}
	var err error
	s, err = server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	admin = client.New(s.HTTPAddr(), "")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err = admin.Login(context.Background(), "admin", "cli-compute-password", "admin"); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KVMSTACK_CONFIG_DIR", t.TempDir())
	return func(args string) (string, error) {
		t.Helper()
		app := newApp()
		var out bytes.Buffer
		app.Writer, app.ErrWriter = &out, io.Discard
		argv := append([]string{"kvmstack", "--addr", s.HTTPAddr(), "--token", admin.Token}, strings.Fields(args)...)
		err := app.Run(interspersed(app, argv))
		return out.String(), err
	}, admin, s
}

// TestInstanceActionsCLI drives instance create --restart-policy and the
// power action commands, with the agent's state reports made by hand.
func TestInstanceActionsCLI(t *testing.T) {
	run, admin := cliServer(t)
	ctx := context.Background()
	mustRun := func(args string) string {
		t.Helper()
		out, err := run(args)
		if err != nil {
			t.Fatalf("%s: %v", args, err)
		}
		return out
	}
	mustRun("flavor create f1 --vcpus 1 --memory 64")
	mustRun("host create h1 --vcpus 8 --memory 8192")

	var created []state.Instance
	if err := json.Unmarshal([]byte(mustRun("instance create vm --flavor f1 --restart-policy on-failure -o json")), &created); err != nil || len(created) != 1 {
		t.Fatalf("create: %v %v", created, err)
	}
	if created[0].RestartPolicy != state.RestartOnFailure {
		t.Errorf("restart policy %q, want on-failure", created[0].RestartPolicy)
	}
	id := created[0].ID
	if _, err := run("instance create bad --flavor f1 --restart-policy sometimes"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("bad restart policy: %v", err)
	}
	var plain []state.Instance
	if err := json.Unmarshal([]byte(mustRun("instance create plain --flavor f1 -o json")), &plain); err != nil || len(plain) != 1 || plain[0].RestartPolicy != state.RestartNever {
		t.Fatalf("default restart policy: %+v %v", plain, err)
	}

	report := func(st string) {
		t.Helper()
		mustRun("instance set-state " + id + " " + st)
	}
	// action runs VERB on arg and checks the recorded request.
	action := func(verb, arg string, seq int) {
		t.Helper()
		var got state.Instance
		if err := json.Unmarshal([]byte(mustRun("instance "+verb+" "+arg+" -o json")), &got); err != nil {
			t.Fatalf("%s: %v", verb, err)
		}
		if got.ID != id || got.Action != verb || got.ActionSeq != seq {
			t.Fatalf("%s %s: recorded action %q seq %d on %s, want %q seq %d on %s", verb, arg, got.Action, got.ActionSeq, got.ID, verb, seq, id)
		}
		in, err := admin.Instance(ctx, id)
		if err != nil || in.Action != verb || in.ActionSeq != seq {
			t.Fatalf("%s: stored %+v %v", verb, in, err)
		}
	}
	conflict := func(verb, arg string) {
		t.Helper()
		if _, err := run("instance " + verb + " " + arg); err == nil || !strings.Contains(err.Error(), "409") {
			t.Fatalf("%s on a %s instance: %v, want 409", verb, mustInstance(t, admin, id).State, err)
		}
	}

	// Asked for while the agent builds the guest: carried out once it runs.
	action("pause", "vm", 1)
	conflict("resume", "vm")
	report(state.InstanceBuilding)
	report(state.InstanceRunning)
	report(state.InstancePaused)
	action("resume", id, 2)
	report(state.InstanceRunning)
	conflict("start", "vm")
	action("reboot", "vm", 3)
	action("stop", "vm", 4)
	report(state.InstanceStopped)
	conflict("stop", "vm")
	action("start", "vm", 5)

	if _, err := run("instance stop no-such-vm"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("stop of an unknown instance: %v", err)
	}
	if _, err := run("instance stop"); err == nil {
		t.Fatal("stop without an instance succeeded")
	}
	// Names are not unique: a shared one must be refused, not guessed.
	mustRun("instance create vm --flavor f1")
	if _, err := run("instance pause vm"); err == nil || !strings.Contains(err.Error(), "give the id") {
		t.Fatalf("pause of an ambiguous name: %v", err)
	}
}

func mustInstance(t *testing.T, c *client.Client, id string) *state.Instance {
	t.Helper()
	in, err := c.Instance(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return in
}
