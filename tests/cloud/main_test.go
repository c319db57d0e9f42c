package cloud

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"kvmstack/tests/kvmhost"
)

var (
	repoRoot, _ = filepath.Abs("../..")
	kvmstackBin = filepath.Join(repoRoot, "build", "bin", "kvmstack")
	vmmBin      = filepath.Join(repoRoot, "build", "bin", "vmm")
	kitVmlinux  = filepath.Join(repoRoot, "build", "kit", "vmlinux")
	kitInitrd   = filepath.Join(repoRoot, "build", "kit", "initrd.img")
)

func TestMain(m *testing.M) {
	if os.Getenv(kvmhost.EnvInside) == "" {
		// Build here: the test host has no Go toolchain.
		for bin, pkg := range map[string]string{kvmstackBin: "./cmd/kvmstack", vmmBin: "./cmd/vmm"} {
			cmd := exec.Command("go", "build", "-o", bin, pkg)
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "cloud: building %s: %v\n%s", pkg, err, out)
				os.Exit(2)
			}
		}
	}
	var files []string
	for _, f := range []string{kvmstackBin, vmmBin, kitVmlinux, kitInitrd} {
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		}
	}
	if kvmhost.HaveKVM() == nil || os.Getenv(kvmhost.EnvInside) != "" {
		code := m.Run()
		closeShared()
		os.Exit(code)
	}
	var env []string
	if v := os.Getenv(envLogs); v != "" {
		env = append(env, envLogs+"="+v)
	}
	kvmhost.Main(m, repoRoot, files, env)
}

// envLogs set to 1 makes every test print the server and agent log lines
// at warning level and above, failed or not.
const envLogs = "KVMSTACK_CLOUD_LOGS"

// needKit skips when KVM, the binaries, the kit or the kernel's network
// devices are missing, saying which.
func needKit(t *testing.T) {
	t.Helper()
	if err := kvmhost.HaveKVM(); err != nil {
		t.Skipf("no KVM here (%v) and the nested test host could not run: see tests/kvmhost", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, bridges, TAPs)")
	}
	for _, f := range []string{kvmstackBin, vmmBin, kitVmlinux, kitInitrd} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("%s missing (run make kit / make build): %v", f, err)
		}
	}
	for _, f := range []string{"/dev/net/tun", "/sys/module/bridge", "/sys/module/vxlan", "/sys/module/veth"} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("the kernel lacks what the hosts' networks need: %v", err)
		}
	}
}
