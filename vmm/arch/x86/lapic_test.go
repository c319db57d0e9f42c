package x86

import (
	"testing"

	"kvmstack/vmm/kvm"
)

func TestSetLocalInterrupts(t *testing.T) {
	var l kvm.LAPICState
	// After reset both LVT entries are masked (bit 16); a level-trigger
	// bit elsewhere must survive.
	l.SetReg32(APICRegLVTLINT0, 1<<16|1<<15)
	l.SetReg32(APICRegLVTLINT1, 1<<16)
	l.SetReg32(0x340, 0xDEAD) // a neighbour that must not change
	SetLocalInterrupts(&l)
	tests := []struct {
		off  int
		want uint32
	}{
		{APICRegLVTLINT0, 0x700 | 1<<15},
		{APICRegLVTLINT1, 0x400},
		{0x340, 0xDEAD},
	}
	for _, tt := range tests {
		if got, _ := l.Reg32(tt.off); got != tt.want {
			t.Errorf("reg %#x = %#x, want %#x", tt.off, got, tt.want)
		}
	}
}
