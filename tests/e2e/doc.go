// Package e2e boots real guests through the vmm binary and checks what
// they print on the serial console, how vmm exits, and how long it took.
// Without /dev/kvm on the machine the whole package re-runs itself inside
// the nested test host of tests/kvmhost, so the boots still happen on a
// real KVM.
package e2e
