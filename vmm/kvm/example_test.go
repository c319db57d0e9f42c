package kvm_test

import (
	"fmt"

	"kvmstack/vmm/kvm"
)

// A run loop's exit handler works on decoded exits, so it can be driven by
// a fabricated run page exactly as by KVM.
func ExampleDecodeExit() {
	run := make([]byte, kvm.RunPageSize)
	if err := kvm.EncodeExit(run, kvm.IOExit{Port: 0x3f8, Size: 1, Count: 1, Data: []byte{'h'}}); err != nil {
		panic(err)
	}
	e, err := kvm.DecodeExit(run)
	if err != nil {
		panic(err)
	}
	switch x := e.(type) {
	case kvm.IOExit:
		fmt.Printf("%v port %#x in=%t data %q\n", x.Kind(), x.Port, x.In, x.Data)
	case kvm.InternalErrorExit:
		if insn, ok := x.InstructionBytes(); ok {
			fmt.Printf("emulation failed on % x\n", insn)
		}
	}
	// Output: IO port 0x3f8 in=false data "h"
}
