package x86

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"kvmstack/tests/kvmhost"
)

// TestMain runs the tests as usual. With KVMSTACK_KVMHOST=1 on a machine
// without /dev/kvm it re-runs them inside the nested test host
// (tests/kvmhost: QEMU TCG with emulated AMD-V and kvm-amd), so the KVM
// tests in kvm_test.go check the entry state, CPUID tables and MSRs against
// a real KVM instead of skipping. Opt-in: the test host boot costs ~15 s.
func TestMain(m *testing.M) {
	if os.Getenv("KVMSTACK_KVMHOST") != "1" {
		os.Exit(m.Run())
	}
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i, f := range files {
		if files[i], err = filepath.Abs(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	kvmhost.Main(m, root, files, nil)
}
