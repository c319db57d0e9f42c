package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/network"
	"kvmstack/orchestrator/state"
)

func TestNetworkEndpoints(t *testing.T) {
	s, adminTok, memberTok := singleServer(t)
	ctx := context.Background()
	m := client.New(s.HTTPAddr(), memberTok)
	admin := client.New(s.HTTPAddr(), adminTok)

	n, err := m.CreateNetwork(ctx, "ep-net", "10.50.0.0/29")
	if err != nil {
		t.Fatal(err)
	}
	if n.Gateway != "10.50.0.1" || n.DHCPAddr != "10.50.0.2" || n.VNI < network.VNIMin {
		t.Fatalf("%+v", n.Network)
	}
	for _, tc := range []struct {
		name, cidr string
		status     int
	}{
		{"ep-net", "10.51.0.0/24", http.StatusConflict},
		{"ep-overlap", "10.50.0.0/16", http.StatusConflict},
		{"ep-v6", "fd00::/64", http.StatusBadRequest},
		{"ep-small", "10.52.0.0/30", http.StatusBadRequest},
		{"bad name", "10.53.0.0/24", http.StatusBadRequest},
	} {
		if _, err := m.CreateNetwork(ctx, tc.name, tc.cidr); !client.IsStatus(err, tc.status) {
			t.Errorf("%s %s: got %v, want HTTP %d", tc.name, tc.cidr, err, tc.status)
		}
	}

	// The agent's view: a host with an underlay address, then an instance
	// with a NIC that the scheduler places there.
	var hv api.HostView
	if _, err := admin.Do(ctx, http.MethodPost, "/v1/hosts", nil, api.HostRequest{Name: "ep-host", VCPUs: 64, MemoryMB: 65536, UnderlayIP: "192.0.2.10"}, &hv); err != nil {
		t.Fatal(err)
	}
	if hv.UnderlayIP != "192.0.2.10" {
		t.Fatalf("underlay_ip not stored: %+v", hv.Host)
	}
	if _, err := admin.Do(ctx, http.MethodPost, "/v1/hosts", nil, api.HostRequest{Name: "ep-bad", VCPUs: 1, MemoryMB: 64, UnderlayIP: "nope"}, nil); !client.IsStatus(err, http.StatusBadRequest) {
		t.Fatalf("bad underlay_ip: %v", err)
	}
	_, idx, err := admin.HostNetworking(ctx, "ep-host", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	woke := make(chan *state.HostNetworking, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		admin.WatchHostNetworking(wctx, "ep-host", func(hn *state.HostNetworking) bool {
			if len(hn.Networks) == 0 {
				return true
			}
			woke <- hn
			return false
		})
		close(woke)
	}()

	var created []api.InstanceView
	if _, err := m.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: "ep-vm", Flavor: "tiny", Networks: []string{"ep-net", n.ID}}, &created); err != nil {
		t.Fatal(err)
	}
	if len(created) != 1 || len(created[0].Ports) != 2 || created[0].Ports[0].IP != "10.50.0.3" || created[0].Ports[1].IP != "10.50.0.4" || created[0].Ports[1].Index != 1 {
		t.Fatalf("created %+v", created)
	}
	hn := <-woke
	if hn == nil {
		t.Fatal("host networking watch did not see the new port")
	}
	if len(hn.Networks) != 1 || hn.Networks[0].Network.ID != n.ID || len(hn.Networks[0].Ports) != 2 || hn.UnderlayIP != "192.0.2.10" ||
		hn.Networks[0].Bridge != network.BridgeName(n.ID) || hn.Networks[0].Ports[0].Tap != network.TapName(created[0].Ports[0].ID) {
		t.Fatalf("host networking %+v", hn)
	}
	if _, next, _ := admin.HostNetworking(ctx, "ep-host", 0, 0); next <= idx {
		t.Fatalf("index did not advance: %d -> %d", idx, next)
	}
	if _, _, err := m.HostNetworking(ctx, "ep-host", 0, 0); !client.IsStatus(err, http.StatusForbidden) {
		t.Fatalf("member read host networking: %v", err)
	}
	if _, _, err := admin.HostNetworking(ctx, "no-such-host", 0, 0); !client.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("unknown host: %v", err)
	}

	// Only 4 addresses: the pool is now 2/4 used, a two-instance batch with
	// two NICs each is refused whole, with a 409.
	if _, err := m.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: "ep-many", Flavor: "tiny", Count: 2, Networks: []string{"ep-net", "ep-net"}}, nil); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("exhaustion: %v", err)
	}
	if _, err := m.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: "ep-x", Flavor: "tiny", Networks: []string{"no-such-net"}}, nil); !client.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("unknown network: %v", err)
	}
	view, err := m.Network(ctx, "ep-net")
	if err != nil || view.Ports != 2 || view.Addresses != 4 {
		t.Fatalf("network view %+v %v", view, err)
	}
	ports, err := m.NetworkPorts(ctx, n.ID)
	if err != nil || len(ports) != 2 {
		t.Fatalf("ports %v %v", ports, err)
	}
	if ip, err := m.InstancePorts(ctx, created[0].ID); err != nil || len(ip) != 2 || ip[0].MAC != ports[0].MAC && ip[0].MAC != ports[1].MAC {
		t.Fatalf("instance ports %v %v", ip, err)
	}
	if err := m.DeleteNetwork(ctx, "ep-net"); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("delete network with ports: %v", err)
	}
	if _, err := m.Do(ctx, http.MethodDelete, "/v1/instances/"+created[0].ID, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteNetwork(ctx, "ep-net"); err != nil {
		t.Fatalf("delete freed network: %v", err)
	}
	if _, err := m.Network(ctx, n.ID); !client.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("deleted network still visible: %v", err)
	}
}

// FuzzNetworkBody posts arbitrary bodies to the network endpoint: every
// answer is JSON and never a 5xx.
func FuzzNetworkBody(f *testing.F) {
	for _, seed := range []string{
		`{"name":"fz","cidr":"10.99.0.0/24"}`, `{"name":"fz2","cidr":"10.99.0.0/16"}`, `{"name":"fz3","cidr":"fd00::/64"}`,
		`{"name":"fz4","cidr":"10.98.0.1/24"}`, `{"name":"fz5"}`, `{"cidr":7}`, `[]`, `null`, `{"name":"a","cidr":"10.97.0.0/29"}{}`, "\x00",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s, _, tok := singleServer(t)
		code, out := post(t, s.HTTPAddr(), "/v1/networks", tok, body)
		if code >= 500 || !json.Valid(out) {
			t.Fatalf("status %d answer %q for %q", code, out, body)
		}
		if code == http.StatusCreated {
			var v api.NetworkView
			if err := json.Unmarshal(out, &v); err != nil || v.VNI < network.VNIMin {
				t.Fatalf("created %s: %v", out, err)
			}
		}
	})
}
