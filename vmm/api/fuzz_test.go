package api

import (
	"encoding/json"
	"testing"
)

// bodyRoutes are the endpoints that read a body.
var bodyRoutes = []struct{ method, path string }{
	{"PUT", "/vm/state"}, {"POST", "/vm/shutdown"}, {"POST", "/vm/kill"}, {"PUT", "/snapshot"}, {"POST", "/restore"},
	{"PUT", "/boot-source"}, {"PUT", "/machine-config"}, {"PUT", "/drives/root"}, {"PUT", "/network-interfaces/eth0"},
	{"PUT", "/rng"}, {"PUT", "/actions"}, {"PATCH", "/drives/root"}, {"PATCH", "/network-interfaces/eth0"},
}

// FuzzRequestBody sends arbitrary bytes to every endpoint that takes a
// body, in a vmm waiting for configuration and in a running one: the
// answer is a 2xx, or a 4xx with a JSON error; never a 5xx or a panic.
func FuzzRequestBody(f *testing.F) {
	for _, seed := range []string{
		``, `{}`, `[]`, `null`, `{"state": "paused"}`, `{"state": "running"}`, `{"dir": "/tmp/s"}`,
		`{"kernel_image_path": "/k", "initrd_path": "/i", "boot_args": "quiet"}`,
		`{"vcpu_count": 2, "mem_size_mib": 512}`, `{"vcpu_count": 1, "mem_size_mib": 1e30}`,
		`{"drive_id": "root", "path_on_host": "/r", "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}}}`,
		`{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "52:54:00:00:00:01"}`,
		`{"action_type": "InstanceStart"}`, `{"enabled": false}`, `{"state": "paused"} x`, "{\"state\": \"\xff\"}",
	} {
		for i := range bodyRoutes {
			f.Add(uint8(i), []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := bodyRoutes[int(route)%len(bodyRoutes)]
		for _, state := range []string{"configured", "running"} {
			s, _, _ := fixture(t, state)
			rec := do(s, r.method, r.path, string(body))
			if rec.Code >= 500 {
				t.Fatalf("%s %s %q in %s: %d %s", r.method, r.path, body, state, rec.Code, rec.Body)
			}
			if rec.Code >= 400 {
				var e Error
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code == "" {
					t.Fatalf("%s %s %q: error body %q", r.method, r.path, body, rec.Body)
				}
			}
		}
	})
}
