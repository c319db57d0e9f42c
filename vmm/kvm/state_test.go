package kvm

import (
	"runtime"
	"testing"
	"unsafe"
)

// The numbers and size below are the x86-64 values of linux/kvm.h
// (_IOR(KVMIO, 0xa1, struct kvm_debugregs) with sizeof 128), hard-coded
// so the check needs neither gcc nor the headers.
func TestDebugRegsLayout(t *testing.T) {
	var d DebugRegs
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(struct kvm_debugregs)", unsafe.Sizeof(d), 128},
		{"offsetof(dr6)", unsafe.Offsetof(d.DR6), 32},
		{"offsetof(dr7)", unsafe.Offsetof(d.DR7), 40},
		{"offsetof(flags)", unsafe.Offsetof(d.Flags), 48},
		{"KVM_GET_DEBUGREGS", kvmGetDebugRegs, 0x8080aea1},
		{"KVM_SET_DEBUGREGS", kvmSetDebugRegs, 0x4080aea2},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

func TestDebugRegsRoundTrip(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sys := openKVM(t)
	_, v := realModeGuest(t, sys, []byte{0xf4}, true)
	d, err := v.GetDebugRegs()
	if err != nil {
		t.Fatal(err)
	}
	d.DB[0], d.DB[3] = 0x1000, 0x2000
	// DR7 bit 10 reads as one on every x86; L0 enables breakpoint 0.
	d.DR7 = 0x401
	if err := v.SetDebugRegs(d); err != nil {
		t.Fatal(err)
	}
	got, err := v.GetDebugRegs()
	if err != nil {
		t.Fatal(err)
	}
	if got.DB != d.DB || got.DR7 != d.DR7 {
		t.Fatalf("after set: DB %#x DR7 %#x, want DB %#x DR7 %#x", got.DB, got.DR7, d.DB, d.DR7)
	}
	if err := v.SetDebugRegs(DebugRegs{Flags: 1}); err == nil {
		t.Fatal("SetDebugRegs with flags 1 succeeded; KVM refuses unknown flags")
	}
}
