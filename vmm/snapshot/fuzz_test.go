package snapshot

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"kvmstack/vmm/kvm"
)

// FuzzDecodeManifest: any bytes decode to a valid manifest or an error
// wrapping one of the two sentinels, never a panic; what decodes
// re-encodes to the same manifest.
func FuzzDecodeManifest(f *testing.F) {
	golden, err := os.ReadFile(filepath.Join("testdata", "manifest.golden"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(golden)
	f.Add(golden[:len(golden)/2])
	f.Add([]byte(`{"magic":"kvmstack-vm-snapshot","format_version":1}`))
	f.Add([]byte(`{"magic":"kvmstack-vm-snapshot","format_version":1,"config":{},"memory_bytes":1,"files":[{"name":"memory","size":1,"checksum":"x"},{"name":"state.json","size":-1,"checksum":"y"}]}`))
	f.Add([]byte(`{"magic":"kvmstack-vm-snapshot","format_version":99}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			if !errors.Is(err, ErrSnapshotCorrupt) && !errors.Is(err, ErrSnapshotVersion) {
				t.Fatalf("error wraps neither sentinel: %v", err)
			}
			return
		}
		enc, err := EncodeManifest(m)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeManifest(enc)
		if err != nil {
			t.Fatalf("re-encoded manifest refused: %v", err)
		}
		if back.FormatVersion != m.FormatVersion || back.MemoryBytes != m.MemoryBytes || !reflect.DeepEqual(back.Files, m.Files) {
			t.Fatalf("round trip changed the manifest: %+v -> %+v", m, back)
		}
	})
}

// FuzzDecodeState: the same for the state file.
func FuzzDecodeState(f *testing.F) {
	// A one-vCPU state (9 KB) and a small device section: seeds much
	// larger (the 21 KB sample state) stall Go's mutator; the big sample
	// is round-tripped by the unit tests.
	small := &State{VCPUs: []VCPU{{CPUID: []kvm.CPUIDEntry2{{Function: 1}}, XSave: &kvm.XSave{}, XCRs: &kvm.XCRs{NrXCRs: 1}}}}
	small.VM.PICSlave.ChipID, small.VM.IOAPIC.ChipID = kvm.IRQChipPICSlave, kvm.IRQChipIOAPIC
	good, err := EncodeState(small)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := DecodeState(good); err != nil {
		f.Fatalf("seed state refused: %v", err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(good[:100])
	f.Add([]byte(`{"vcpus":[{"id":0,"cpuid":[{}]}],"vm":{"pic_master":{"ChipID":0},"pic_slave":{"ChipID":1},"ioapic":{"ChipID":2}},"devices":{}}`))
	f.Add([]byte(`{"vcpus":[{"id":0,"cpuid":[{}],"xsave":{"Extra":[1,2,3]}}]}`))
	f.Add([]byte(`{"vcpus":[{"id":0,"cpuid":[{}]}],"vm":{"pic_slave":{"ChipID":1},"ioapic":{"ChipID":2}},` +
		`"devices":{"serial":{"rx":"bHMK"},"pci":{"config_address":1,"slots":[null,{"regs":"AAA=","bars":[1,0,0,0,0,0]}]},` +
		`"virtio":[{"device_type":2,"queues":[{"size":8,"enabled":true,"last_avail":3,"used_idx":3}],"msix":{"table":"AAAA","pba":[0]}}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeState(b)
		if err != nil {
			if !errors.Is(err, ErrSnapshotCorrupt) {
				t.Fatalf("error does not wrap ErrSnapshotCorrupt: %v", err)
			}
			return
		}
		enc, err := EncodeState(s)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeState(enc)
		if err != nil {
			t.Fatalf("re-encoded state refused: %v", err)
		}
		// Compared encoded: an empty and a missing list decode to
		// different but equivalent values.
		enc2, err := EncodeState(back)
		if err != nil || string(enc2) != string(enc) {
			t.Fatalf("round trip changed the state: %v", err)
		}
	})
}
