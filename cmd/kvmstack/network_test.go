package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestNetworkCLI drives the network commands and instance create --network
// against a single in-process server.
func TestNetworkCLI(t *testing.T) {
	run, _ := cliServer(t)
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
