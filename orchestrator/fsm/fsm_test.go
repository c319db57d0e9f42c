package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"kvmstack/orchestrator/state"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func h(d time.Duration) Header { return Header{At: t0.Add(d)} }

type harness struct {
	t   testing.TB
	f   *FSM
	idx uint64
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	hs := &harness{t: t, f: New(state.New(), nil)}
	hs.must(&Bootstrap{Header: h(0),
		Project: state.Project{ID: "p-admin", Name: "admin"},
		User:    state.User{ID: "u-admin", Name: "admin", PasswordHash: "x"},
		Key:     state.SigningKey{ID: "k1", Secret: bytes.Repeat([]byte{1}, 32), CreatedAt: t0}})
	hs.must(&ProjectCreate{Header: h(0), Project: state.Project{ID: "p1", Name: "one"}})
	hs.must(&ProjectCreate{Header: h(0), Project: state.Project{ID: "p2", Name: "two"}})
	hs.must(&FlavorCreate{Header: h(0), Flavor: state.Flavor{ID: "f-small", Name: "small", VCPUs: 2, MemoryMB: 1024, DiskGB: 10}})
	return hs
}

// apply round-trips the command through the wire format like Raft would.
func (hs *harness) apply(c Command) *Result {
	hs.t.Helper()
	b, err := Encode(c)
	if err != nil {
		hs.t.Fatalf("encode %T: %v", c, err)
	}
	hs.idx++
	r, _ := hs.f.Apply(&raft.Log{Index: hs.idx, Type: raft.LogCommand, Data: b}).(*Result)
	return r
}

func (hs *harness) must(c Command) *Result {
	hs.t.Helper()
	r := hs.apply(c)
	if r.Err != nil {
		hs.t.Fatalf("%T: %v", c, r.Err)
	}
	return r
}

func (hs *harness) host(name string, vcpus, mem int, at time.Duration) string {
	r := hs.must(&HostRegister{Header: h(at), Host: state.Host{ID: "h-" + name, Name: name, VCPUs: vcpus, MemoryMB: mem, DiskGB: 100,
		CPURatio: 1, RAMRatio: 1, DiskRatio: 1}})
	return r.Value.(*state.Host).ID
}

func (hs *harness) instance(id, project, group string) {
	hs.must(&InstanceCreate{Header: h(time.Second), Instances: []*state.Instance{{ID: id, Name: id, ProjectID: project, FlavorID: "f-small", ServerGroupID: group}}})
}

func (hs *harness) place(id, host string, at time.Duration) error {
	r := hs.must(&InstancePlace{Header: h(at), Rules: state.PlacementRules{HostTTL: time.Minute}, Placements: []state.Placement{{InstanceID: id, HostID: host}}})
	return r.Value.([]error)[0]
}

func TestCommandsRevalidated(t *testing.T) {
	tests := []struct {
		name string
		prep func(hs *harness)
		cmd  Command
		want error
	}{
		{"second bootstrap", nil, &Bootstrap{Header: h(0), Project: state.Project{ID: "p9", Name: "x"}, User: state.User{ID: "u9", Name: "y", PasswordHash: "z"},
			Key: state.SigningKey{ID: "k9", Secret: make([]byte, 32)}}, state.ErrConflict},
		{"duplicate project name", nil, &ProjectCreate{Header: h(0), Project: state.Project{ID: "p3", Name: "one"}}, state.ErrConflict},
		{"bad project name", nil, &ProjectCreate{Header: h(0), Project: state.Project{ID: "p3", Name: "a b"}}, state.ErrInvalid},
		{"role on missing user", nil, &RoleAssign{Header: h(0), Assignment: state.RoleAssignment{UserID: "nope", ProjectID: "p1", Role: "member"}}, state.ErrNotFound},
		{"unknown role", nil, &RoleAssign{Header: h(0), Assignment: state.RoleAssignment{UserID: "u-admin", ProjectID: "p1", Role: "owner"}}, state.ErrInvalid},
		{"short key", nil, &KeyRotate{Header: h(0), Key: state.SigningKey{ID: "k2", Secret: []byte("short")}}, state.ErrInvalid},
		{"zero-vcpu flavor", nil, &FlavorCreate{Header: h(0), Flavor: state.Flavor{ID: "f0", Name: "zero", MemoryMB: 64}}, state.ErrInvalid},
		{"instance of unknown flavor", nil, &InstanceCreate{Header: h(0), Instances: []*state.Instance{{ID: "i1", Name: "i1", ProjectID: "p1", FlavorID: "nope"}}}, state.ErrNotFound},
		{"instance with other project's group", func(hs *harness) {
			hs.must(&GroupCreate{Header: h(0), Group: state.ServerGroup{ID: "g2", ProjectID: "p2", Name: "g", Policy: state.PolicyAffinity}})
		}, &InstanceCreate{Header: h(0), Instances: []*state.Instance{{ID: "i1", Name: "i1", ProjectID: "p1", FlavorID: "f-small", ServerGroupID: "g2"}}}, state.ErrNotFound},
		{"instance with other project's private image", func(hs *harness) {
			hs.must(&ImageCreate{Header: h(0), Image: state.Image{ID: "img2", ProjectID: "p2", Name: "d", Kind: state.ImageDisk, SHA256: fmt.Sprintf("%064x", 1), Visibility: state.VisibilityPrivate}})
		}, &InstanceCreate{Header: h(0), Instances: []*state.Instance{{ID: "i1", Name: "i1", ProjectID: "p1", FlavorID: "f-small", ImageID: "img2"}}}, state.ErrNotFound},
		{"kernel used as disk", func(hs *harness) {
			hs.must(&ImageCreate{Header: h(0), Image: state.Image{ID: "k", ProjectID: "p1", Name: "k", Kind: state.ImageKernel, SHA256: fmt.Sprintf("%064x", 2), Visibility: state.VisibilityPrivate}})
		}, &InstanceCreate{Header: h(0), Instances: []*state.Instance{{ID: "i1", Name: "i1", ProjectID: "p1", FlavorID: "f-small", ImageID: "k"}}}, state.ErrInvalid},
		{"quota exceeded by batch", func(hs *harness) {
			hs.must(&QuotaSet{Header: h(0), Quota: state.Quota{ProjectID: "p1", Instances: 1, VCPUs: -1, MemoryMB: -1}})
		}, &InstanceCreate{Header: h(0), Instances: []*state.Instance{{ID: "i1", Name: "i1", ProjectID: "p1", FlavorID: "f-small"}, {ID: "i2", Name: "i2", ProjectID: "p1", FlavorID: "f-small"}}}, state.ErrQuota},
		{"illegal transition", func(hs *harness) { hs.instance("i1", "p1", "") },
			&InstanceState{Header: h(0), ID: "i1", State: state.InstanceRunning, Reason: "skip"}, state.ErrConflict},
		{"delete project with instances", func(hs *harness) { hs.instance("i1", "p1", "") }, &ProjectDelete{Header: h(0), ID: "p1"}, state.ErrConflict},
		{"delete admin project", nil, &ProjectDelete{Header: h(0), ID: "p-admin"}, state.ErrInvalid},
		{"delete busy host", func(hs *harness) {
			hs.instance("i1", "p1", "")
			if err := hs.place("i1", hs.host("a", 4, 4096, 0), time.Second); err != nil {
				t.Fatal(err)
			}
		}, &HostDelete{Header: h(0), ID: "h-a"}, state.ErrConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := newHarness(t)
			if tc.prep != nil {
				tc.prep(hs)
			}
			before := snapshotBytes(t, hs.f)
			r := hs.apply(tc.cmd)
			if !errors.Is(r.Err, tc.want) {
				t.Fatalf("got %v, want %v", r.Err, tc.want)
			}
			if after := snapshotBytes(t, hs.f); !bytes.Equal(before, after) {
				t.Fatalf("rejected command changed the state")
			}
		})
	}
}

func TestPlacementRevalidated(t *testing.T) {
	hs := newHarness(t)
	a := hs.host("a", 4, 2048, 0)
	b := hs.host("b", 8, 4096, 0)
	hs.must(&GroupCreate{Header: h(0), Group: state.ServerGroup{ID: "anti", ProjectID: "p1", Name: "anti", Policy: state.PolicyAntiAffinity}})
	hs.must(&GroupCreate{Header: h(0), Group: state.ServerGroup{ID: "aff", ProjectID: "p1", Name: "aff", Policy: state.PolicyAffinity}})
	for _, id := range []string{"i1", "i2", "i3"} {
		hs.instance(id, "p1", "")
	}
	hs.instance("x1", "p1", "anti")
	hs.instance("x2", "p1", "anti")
	hs.instance("y1", "p1", "aff")
	hs.instance("y2", "p1", "aff")

	check := func(name, inst, host string, at time.Duration, want error) {
		t.Helper()
		if err := hs.place(inst, host, at); !errors.Is(err, want) {
			t.Fatalf("%s: got %v, want %v", name, err, want)
		}
	}
	check("fits", "i1", a, time.Second, nil)
	check("replayed placement", "i1", a, time.Second, state.ErrConflict)
	check("fills memory", "i2", a, time.Second, nil)
	check("over capacity", "i3", a, time.Second, state.ErrNoCapacity)
	check("host down after ttl", "i3", b, 2*time.Minute, state.ErrNoCapacity)
	hs.must(&HostEnable{Header: h(0), ID: b, Enabled: false})
	check("disabled host", "i3", b, time.Second, state.ErrNoCapacity)
	hs.must(&HostEnable{Header: h(0), ID: b, Enabled: true})
	check("anti-affinity first", "x1", b, time.Second, nil)
	check("anti-affinity same host", "x2", b, time.Second, state.ErrNoCapacity)
	check("affinity first", "y1", b, time.Second, nil)
	check("affinity other host", "y2", a, time.Second, state.ErrNoCapacity)
	check("affinity same host", "y2", b, time.Second, nil)

	r := hs.f.Store().Read(nil)
	ha, _ := r.Host(a)
	if ha.UsedVCPUs != 4 || ha.UsedMemoryMB != 2048 || ha.Instances != 2 {
		t.Fatalf("host a usage %+v", ha)
	}
	hs.must(&InstanceState{Header: h(0), ID: "i1", State: state.InstanceDeleted, Reason: "user request"})
	ha, _ = hs.f.Store().Read(nil).Host(a)
	if ha.UsedVCPUs != 2 || ha.Instances != 1 {
		t.Fatalf("delete did not free resources: %+v", ha)
	}
	check("fits after delete", "i3", a, time.Second, nil)
	in, _ := hs.f.Store().Read(nil).Instance("i1")
	var got []string
	for _, tr := range in.History {
		got = append(got, tr.State)
	}
	if fmt.Sprint(got) != "[pending scheduled deleted]" || in.History[2].Reason != "user request" {
		t.Fatalf("history %+v", in.History)
	}
}

func TestNoValidHostRecordsReason(t *testing.T) {
	hs := newHarness(t)
	hs.instance("i1", "p1", "")
	r := hs.must(&InstancePlace{Header: h(0), Placements: []state.Placement{{InstanceID: "i1", Error: "no valid host: 3 hosts, RAM removed 3"}}})
	if errs := r.Value.([]error); errs[0] != nil {
		t.Fatal(errs[0])
	}
	in, _ := hs.f.Store().Read(nil).Instance("i1")
	if in.State != state.InstanceError || in.History[1].Reason != "no valid host: 3 hosts, RAM removed 3" {
		t.Fatalf("%+v", in)
	}
}

func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := f.Store().WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { return nil }

func TestSnapshotRestore(t *testing.T) {
	hs := newHarness(t)
	a := hs.host("a", 8, 8192, 0)
	hs.instance("i1", "p1", "")
	if err := hs.place("i1", a, time.Second); err != nil {
		t.Fatal(err)
	}
	hs.must(&TokenRevoke{Header: h(0), Token: state.RevokedToken{ID: "tok", ExpiresAt: t0.Add(time.Hour)}})
	snap, err := hs.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after Snapshot must not leak into the persisted image.
	hs.instance("late", "p1", "")
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	g := New(state.New(), nil)
	if err := g.Restore(ioNopCloser{bytes.NewReader(sink.Bytes())}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snapshotBytes(t, g), sink.Bytes()) {
		t.Fatal("restored state does not re-snapshot identically")
	}
	r := g.Store().Read(nil)
	if in, _ := r.Instance("late"); in != nil {
		t.Fatal("snapshot contains a write made after Snapshot()")
	}
	if in, _ := r.Instance("i1"); in == nil || in.HostID != a {
		t.Fatalf("instance lost: %+v", in)
	}
	if !r.TokenRevoked("tok") || r.AdminProject() != "p-admin" || r.Index("instances") == 0 {
		t.Fatal("restored state incomplete")
	}
	if g.Restores() != 1 {
		t.Fatal("restore not counted")
	}
	if err := g.Restore(ioNopCloser{bytes.NewReader([]byte(`{"t":"nope","o":{}}`))}); err == nil {
		t.Fatal("restore accepted an unknown table")
	}
}

type ioNopCloser struct{ *bytes.Reader }

func (ioNopCloser) Close() error { return nil }

func TestDecodeRejects(t *testing.T) {
	good, _ := Encode(&ProjectDelete{Header: h(0), ID: "p1"})
	tests := map[string][]byte{
		"empty":         nil,
		"type only":     {byte(TypeProjectDelete)},
		"unknown type":  append([]byte{200}, good[1:]...),
		"unknown field": append([]byte{byte(TypeProjectDelete)}, []byte(`{"at":"2026-01-01T00:00:00Z","id":"x","evil":1}`)...),
		"no time":       append([]byte{byte(TypeProjectDelete)}, []byte(`{"id":"x"}`)...),
		"trailing data": append(append([]byte{}, good...), []byte(`{"x":1}`)...),
		"oversized":     append([]byte{byte(TypeProjectDelete)}, make([]byte, MaxCommandSize)...),
		"not json":      {byte(TypeProjectDelete), '{', '{'},
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode(b); !errors.Is(err, ErrDecode) {
				t.Fatalf("got %v", err)
			}
		})
	}
	if _, err := Decode(good); err != nil {
		t.Fatal(err)
	}
}

func FuzzDecode(f *testing.F) {
	seeds := []Command{
		&ProjectCreate{Header: h(0), Project: state.Project{ID: "p1", Name: "x"}},
		&InstanceCreate{Header: h(0), Instances: []*state.Instance{{ID: "i", Name: "i", ProjectID: "p1", FlavorID: "f-small", Metadata: map[string]string{"a": "b"}}}},
		&InstancePlace{Header: h(0), Placements: []state.Placement{{InstanceID: "i", HostID: "h"}}},
		&HostRegister{Header: h(0), Host: state.Host{ID: "h", Name: "h", VCPUs: 1, MemoryMB: 64, CPURatio: 1, RAMRatio: 1, DiskRatio: 1}},
		&InstanceState{Header: h(0), ID: "i", State: "running"},
		&HostDown{Header: h(0), ID: "h", TTL: 30 * time.Second},
		&InstanceEvacuate{Header: h(0), Rules: state.PlacementRules{HostTTL: time.Minute}, Placements: []state.Placement{{InstanceID: "i", HostID: "h2"}, {InstanceID: "j", Error: "no valid host"}}},
	}
	for _, c := range seeds {
		b, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Encode(c)
		if err != nil {
			t.Fatalf("decoded command does not encode: %v", err)
		}
		if _, err := Decode(again); err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		// Whatever decodes must be applied or rejected, never panic.
		hs := newHarness(t)
		hs.f.ApplyCommand(100, c)
	})
}
