package kvmhost

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// KVMPath is where the tests look for KVM.
const KVMPath = "/dev/kvm"

// HaveKVM reports whether /dev/kvm can be opened, and if not, why.
func HaveKVM() error {
	f, err := os.OpenFile(KVMPath, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// Main is a TestMain body for tests that need /dev/kvm. With KVM present
// (or already inside the test host) it runs the tests. Without it, it
// re-executes this test binary inside the nested test host, with extra
// files (the vmm binary, the guest kit) at their host paths, and exits with
// the status the tests had there. If the test host cannot be started either,
// the tests run here and skip, each saying why.
func Main(m *testing.M, repoRoot string, extraFiles []string, env []string) {
	if HaveKVM() == nil || os.Getenv(EnvInside) != "" {
		os.Exit(m.Run())
	}
	dir := filepath.Join(repoRoot, "build", "kvmhost")
	if err := Available(dir); err != nil {
		fmt.Fprintf(os.Stderr, "kvmhost: no /dev/kvm here and %v; KVM tests will skip\n", err)
		os.Exit(m.Run())
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvmhost:", err)
		os.Exit(2)
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvmhost:", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "kvmhost: no /dev/kvm on this machine (%v); running %s inside a QEMU TCG test host with emulated AMD-V and kvm-amd\n",
		HaveKVM(), filepath.Base(self))
	timeout := 25 * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	status, err := Run(ctx, Config{
		Dir:     dir,
		Files:   append([]string{self}, extraFiles...),
		Args:    append([]string{self}, os.Args[1:]...),
		Env:     env,
		WorkDir: wd,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvmhost:", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "kvmhost: tests in the test host exited %d after %s\n", status, time.Since(start).Round(time.Second))
	os.Exit(status)
}
