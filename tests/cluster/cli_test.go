package cluster

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLI drives the kvmstack binary like a user: login caches a 0600
// token, resources are created and listed as JSON, and server errors print
// the server's message with a non-zero exit status.
func TestCLI(t *testing.T) {
	c := sharedCluster(t)
	cfg := t.TempDir()
	run := func(stdin string, args ...string) (string, string, error) {
		cmd := exec.Command(binary, args...)
		cmd.Env = append(os.Environ(), "KVMSTACK_ADDR="+c.procs[2].http, "KVMSTACK_CONFIG_DIR="+cfg, "KVMSTACK_TOKEN=", "KVMSTACK_PASSWORD=")
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	if _, stderr, err := run(adminPassword+"\n", "login", "--user", "admin", "--project", "admin"); err != nil {
		t.Fatalf("login: %v: %s", err, stderr)
	}
	st, err := os.Stat(filepath.Join(cfg, "token.json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token cache: %v mode %v", err, st.Mode())
	}
	if out, stderr, err := run("", "flavor", "create", "cli-tiny", "--vcpus", "1", "--memory", "64"); err != nil || !strings.Contains(out, "cli-tiny") {
		t.Fatalf("flavor create: %v\n%s%s", err, out, stderr)
	}
	out, stderr, err := run("", "flavor", "list", "-o", "json")
	if err != nil {
		t.Fatalf("flavor list: %v %s", err, stderr)
	}
	var flavors []map[string]any
	if err := json.Unmarshal([]byte(out), &flavors); err != nil {
		t.Fatalf("flavor list -o json is not JSON: %v\n%s", err, out)
	}
	found := false
	for _, f := range flavors {
		found = found || f["name"] == "cli-tiny"
	}
	if !found {
		t.Fatalf("created flavor not listed: %s", out)
	}
	if out, _, err := run("", "flavor", "list"); err != nil || !strings.HasPrefix(out, "ID") {
		t.Fatalf("table output: %v %q", err, out)
	}
	_, stderr, err = run("", "flavor", "create", "cli-tiny", "--vcpus", "1", "--memory", "64")
	if err == nil || !strings.Contains(stderr, "taken") || !strings.Contains(stderr, "409") {
		t.Fatalf("duplicate flavor: err=%v stderr=%q", err, stderr)
	}
	if out, stderr, err := run("", "server", "members"); err != nil || strings.Count(out, "Voter") != 3 {
		t.Fatalf("server members: %v\n%s%s", err, out, stderr)
	}
	if _, _, err := run("", "logout"); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := run("", "flavor", "list"); err == nil || !strings.Contains(stderr, "401") {
		t.Fatalf("after logout: err=%v stderr=%q", err, stderr)
	}
}
