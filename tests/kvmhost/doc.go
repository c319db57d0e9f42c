// Package kvmhost runs a command on a real KVM when the machine itself has no
// /dev/kvm: it boots Debian's cloud kernel under QEMU's TCG with an emulated
// AMD-V CPU, loads kvm-amd there, and runs the command inside, with the files
// it needs packed into the initramfs at their host paths. The e2e tests use it
// from TestMain so that `go test` on such a machine still boots real guests
// through vmm, on a KVM of the hardware (svm) kind. build.sh prepares the
// kernel and modules under build/kvmhost.
package kvmhost
