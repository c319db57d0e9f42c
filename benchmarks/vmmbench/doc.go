// Command vmmbench measures vmm against references on the same host and
// prints one table: the port-I/O exit round trip of a Go KVM_RUN loop (the
// vmm/kvm and vmm exit path) against the same loop in C, boot time to the
// kit's "KIT READY" for vmm against QEMU (-enable-kvm -M microvm, same
// kernel, initrd and command line), and vmm's RSS against the guest RAM
// the guest touched. benchmarks/run.sh builds its inputs and runs it (inside
// the nested test host when the machine has no /dev/kvm).
package main
