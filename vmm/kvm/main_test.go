package kvm

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"kvmstack/tests/kvmhost"
)

// TestMain runs the package's tests as usual. With KVMSTACK_KVMHOST=1 on a
// machine without /dev/kvm, it re-runs them inside the nested test host
// (tests/kvmhost: QEMU TCG with emulated AMD-V and kvm-amd), so the
// integration tests in vcpu_test.go exercise a real KVM instead of
// skipping. It is opt-in because that boot adds ~15 s to every run.
func TestMain(m *testing.M) {
	if os.Getenv("KVMSTACK_KVMHOST") != "1" {
		os.Exit(m.Run())
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	golden, err := filepath.Abs(filepath.Join("testdata", "varlen.golden"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	kvmhost.Main(m, root, []string{golden}, nil)
}
