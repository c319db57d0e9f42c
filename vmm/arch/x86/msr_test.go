package x86

import (
	"slices"
	"testing"

	"kvmstack/vmm/kvm"
)

func TestBootMSRs(t *testing.T) {
	all := []uint32{0x10, MSRIA32ArchCaps, 0x174, 0x175, 0x176, 0x1A0, 0x2FF,
		0xC000_0081, 0xC000_0082, 0xC000_0083, 0xC000_0084, 0xC000_0102}
	tests := []struct {
		name      string
		supported []uint32
		want      []kvm.MSREntry
	}{
		{"all", all, []kvm.MSREntry{
			{Index: 0x174}, {Index: 0x175}, {Index: 0x176},
			{Index: 0xC000_0081}, {Index: 0xC000_0082}, {Index: 0xC000_0083},
			{Index: 0xC000_0102}, {Index: 0xC000_0084},
			{Index: 0x1A0, Data: 1}, {Index: 0x2FF, Data: 0x806},
		}},
		{"noCSTARnoMTRR", []uint32{0xC000_0082, 0x1A0, 0x10A}, []kvm.MSREntry{
			{Index: 0xC000_0082}, {Index: 0x1A0, Data: 1},
		}},
		{"none", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := BootMSRs(tt.supported)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("BootMSRs = %+v, want %+v", got, tt.want)
			}
			for _, e := range got {
				if e.Index == 0x10A || e.Index == 0x10 {
					t.Errorf("BootMSRs includes %#x", e.Index)
				}
			}
		})
	}
}
