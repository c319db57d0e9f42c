package state

import (
	"errors"
	"testing"
	"time"

	"kvmstack/orchestrator/network"
)

// TestMACCollisionProbes forges a port holding the first candidate MAC of
// the next port id: the FSM must move on to the next candidate, the same
// one on every replica, instead of failing or duplicating the MAC.
func TestMACCollisionProbes(t *testing.T) {
	s := New()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	err := s.Write(1, func(w *WriteTxn) error {
		if err := w.CreateProject(&Project{ID: "p1", Name: "p"}); err != nil {
			return err
		}
		if err := w.CreateFlavor(&Flavor{ID: "f", Name: "f", VCPUs: 1, MemoryMB: 64}); err != nil {
			return err
		}
		if _, err := w.CreateNetwork(&Network{ID: "n1", ProjectID: "p1", Name: "n", CIDR: "10.0.0.0/24"}, at); err != nil {
			return err
		}
		if err := w.CreateInstances([]*Instance{{ID: "i1", Name: "i1", ProjectID: "p1", FlavorID: "f"}}, at); err != nil {
			return err
		}
		return w.insert(tablePorts, &Port{ID: "forged", NetworkID: "n1", InstanceID: "i1", IP: "10.0.0.200", MAC: network.MAC("target", 0).String()})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Write(2, func(w *WriteTxn) error {
		return w.CreatePorts([]*Port{{ID: "target", InstanceID: "i1", NetworkID: "n1", Index: 1}}, at)
	})
	if err != nil {
		t.Fatal(err)
	}
	ports, _ := s.Read(nil).Ports(PortFilter{InstanceID: "i1"})
	if len(ports) != 2 || ports[1].ID != "target" || ports[1].MAC != network.MAC("target", 1).String() {
		t.Fatalf("%+v", ports)
	}
}

func TestFreeVNI(t *testing.T) {
	s := New()
	err := s.Write(1, func(w *WriteTxn) error {
		for i, v := range []uint32{10, 11, 13, 20} {
			if err := w.insert(tableNetworks, &Network{ID: string(rune('a' + i)), ProjectID: "p1", Name: string(rune('a' + i)), VNI: v}); err != nil {
				return err
			}
		}
		tests := []struct {
			lo, hi, want uint32
			err          error
		}{
			{10, 100, 12, nil},
			{13, 100, 14, nil},
			{5, 100, 5, nil},
			{10, 11, 0, ErrExhausted},
			{20, 20, 0, ErrExhausted},
			{20, 21, 21, nil},
		}
		for _, tc := range tests {
			v, err := w.freeVNIIn(tc.lo, tc.hi)
			if v != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("freeVNIIn(%d, %d) = %d, %v; want %d, %v", tc.lo, tc.hi, v, err, tc.want, tc.err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
