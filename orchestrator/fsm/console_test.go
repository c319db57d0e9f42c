package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"kvmstack/orchestrator/state"
)

// TestHostConsoleEndpoint: a registration carries the agent's console
// address and key, both or neither; a re-registration replaces them.
func TestHostConsoleEndpoint(t *testing.T) {
	key := strings.Repeat("0123456789abcdef", 4)
	reg := func(addr, k string) *HostRegister {
		return &HostRegister{Header: h(0), Host: state.Host{ID: "h-a", Name: "a", VCPUs: 1, MemoryMB: 64, CPURatio: 1, RAMRatio: 1, DiskRatio: 1,
			ConsoleAddr: addr, ConsoleKey: k}}
	}
	hs := newHarness(t)
	hs.must(reg("10.0.0.11:8482", key))
	invalid := map[string]*HostRegister{
		"address without key":  reg("10.0.0.11:8482", ""),
		"key without address":  reg("", key),
		"no port":              reg("10.0.0.11", key),
		"no host":              reg(":8482", key),
		"port 0":               reg("node1:0", key),
		"port out of range":    reg("node1:65536", key),
		"named port":           reg("node1:http", key),
		"URL":                  reg("http://node1:8482", key),
		"upper-case key":       reg("node1:8482", strings.ToUpper(key)),
		"short key":            reg("node1:8482", key[:62]),
		"key with a separator": reg("node1:8482", key[:63]+" "),
	}
	for name, c := range invalid {
		if r := hs.apply(c); !errors.Is(r.Err, state.ErrInvalid) {
			t.Errorf("%s: %v", name, r.Err)
		}
	}
	got, _ := hs.f.Store().Read(nil).Host("a")
	if got.ConsoleAddr != "10.0.0.11:8482" || got.ConsoleKey != key {
		t.Fatalf("after refused registrations: %q %q", got.ConsoleAddr, got.ConsoleKey)
	}
	hs.must(reg("[2001:db8::1]:9000", key))
	hs.must(reg("", ""))
	if got, _ := hs.f.Store().Read(nil).Host("a"); got.ConsoleAddr != "" || got.ConsoleKey != "" {
		t.Fatalf("an agent without a console endpoint re-registered, still %q", got.ConsoleAddr)
	}
}

// TestHostRegisterOldFormat: a HostRegister written before hosts had a
// console endpoint (in a log or a snapshot) still applies, as a host
// without one; the new fields are omitted when empty, so such commands
// encode exactly as before.
func TestHostRegisterOldFormat(t *testing.T) {
	old := append([]byte{byte(TypeHostRegister)}, []byte(`{"at":"2026-01-02T03:04:05Z","host":{"id":"h-old","name":"old","underlay_ip":"192.0.2.9",`+
		`"vcpus":4,"memory_mb":4096,"disk_gb":10,"cpu_allocation_ratio":1,"ram_allocation_ratio":1,"disk_allocation_ratio":1,"enabled":false,`+
		`"last_heartbeat":"0001-01-01T00:00:00Z","registered_at":"0001-01-01T00:00:00Z","used_vcpus":0,"used_memory_mb":0,"used_disk_gb":0,"instances":0}}`+"\n")...)
	c, err := Decode(old)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Encode(c)
	if err != nil || !bytes.Equal(again, old) {
		t.Fatalf("re-encoded differently:\n%s\n%s", again, old)
	}
	hs := newHarness(t)
	r, _ := hs.f.Apply(&raft.Log{Index: 100, Type: raft.LogCommand, Data: old}).(*Result)
	if r == nil || r.Err != nil {
		t.Fatalf("apply: %+v", r)
	}
	got, _ := hs.f.Store().Read(nil).Host("old")
	if got == nil || got.ConsoleAddr != "" || got.UnderlayIP != "192.0.2.9" || !got.RegisteredAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("registered %+v", got)
	}
}
