package kvm

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// ioctlNumbers names every request number this package issues.
func ioctlNumbers() map[string]uintptr {
	return map[string]uintptr{
		"KVM_GET_API_VERSION":            kvmGetAPIVersion,
		"KVM_CREATE_VM":                  kvmCreateVM,
		"KVM_GET_MSR_INDEX_LIST":         kvmGetMSRIndexList,
		"KVM_CHECK_EXTENSION":            kvmCheckExtension,
		"KVM_GET_VCPU_MMAP_SIZE":         kvmGetVCPUMmapSize,
		"KVM_GET_SUPPORTED_CPUID":        kvmGetSupportedCPUID,
		"KVM_GET_MSR_FEATURE_INDEX_LIST": kvmGetMSRFeatureIndexList,
		"KVM_CREATE_VCPU":                kvmCreateVCPU,
		"KVM_SET_USER_MEMORY_REGION":     kvmSetUserMemoryRegion,
		"KVM_SET_TSS_ADDR":               kvmSetTSSAddr,
		"KVM_SET_IDENTITY_MAP_ADDR":      kvmSetIdentityMapAddr,
		"KVM_CREATE_IRQCHIP":             kvmCreateIRQChip,
		"KVM_IRQ_LINE":                   kvmIRQLine,
		"KVM_GET_IRQCHIP":                kvmGetIRQChip,
		"KVM_SET_IRQCHIP":                kvmSetIRQChip,
		"KVM_SET_GSI_ROUTING":            kvmSetGSIRouting,
		"KVM_IRQFD":                      kvmIRQFD,
		"KVM_CREATE_PIT2":                kvmCreatePIT2,
		"KVM_IOEVENTFD":                  kvmIOEventFD,
		"KVM_SET_CLOCK":                  kvmSetClock,
		"KVM_GET_CLOCK":                  kvmGetClock,
		"KVM_GET_PIT2":                   kvmGetPIT2,
		"KVM_SET_PIT2":                   kvmSetPIT2,
		"KVM_SIGNAL_MSI":                 kvmSignalMSI,
		"KVM_ENABLE_CAP":                 kvmEnableCap,
		"KVM_RUN":                        kvmRun,
		"KVM_GET_REGS":                   kvmGetRegs,
		"KVM_SET_REGS":                   kvmSetRegs,
		"KVM_GET_SREGS":                  kvmGetSregs,
		"KVM_SET_SREGS":                  kvmSetSregs,
		"KVM_TRANSLATE":                  kvmTranslate,
		"KVM_INTERRUPT":                  kvmInterrupt,
		"KVM_GET_MSRS":                   kvmGetMSRs,
		"KVM_SET_MSRS":                   kvmSetMSRs,
		"KVM_GET_FPU":                    kvmGetFPU,
		"KVM_SET_FPU":                    kvmSetFPU,
		"KVM_GET_LAPIC":                  kvmGetLAPIC,
		"KVM_SET_LAPIC":                  kvmSetLAPIC,
		"KVM_SET_CPUID2":                 kvmSetCPUID2,
		"KVM_GET_CPUID2":                 kvmGetCPUID2,
		"KVM_GET_MP_STATE":               kvmGetMPState,
		"KVM_SET_MP_STATE":               kvmSetMPState,
		"KVM_NMI":                        kvmNMI,
		"KVM_GET_VCPU_EVENTS":            kvmGetVCPUEvents,
		"KVM_SET_VCPU_EVENTS":            kvmSetVCPUEvents,
		"KVM_SET_TSC_KHZ":                kvmSetTSCKHz,
		"KVM_GET_TSC_KHZ":                kvmGetTSCKHz,
		"KVM_GET_XSAVE":                  kvmGetXSave,
		"KVM_SET_XSAVE":                  kvmSetXSave,
		"KVM_GET_XCRS":                   kvmGetXCRS,
		"KVM_SET_XCRS":                   kvmSetXCRS,
		"KVM_KVMCLOCK_CTRL":              kvmKVMClockCtrl,
		"KVM_GET_XSAVE2":                 kvmGetXSave2,
	}
}

// TestIoctlNumbersKnown compares with values worked out by hand from the
// header macros (dir<<30 | size<<16 | 0xAE<<8 | nr), independent of gcc.
func TestIoctlNumbersKnown(t *testing.T) {
	want := map[string]uintptr{
		"KVM_CREATE_VM":              0xAE01,
		"KVM_RUN":                    0xAE80,
		"KVM_GET_REGS":               0x8090AE81,
		"KVM_SET_REGS":               0x4090AE82,
		"KVM_GET_SREGS":              0x8138AE83,
		"KVM_SET_SREGS":              0x4138AE84,
		"KVM_SET_USER_MEMORY_REGION": 0x4020AE46,
		"KVM_SET_CPUID2":             0x4008AE90,
		"KVM_GET_SUPPORTED_CPUID":    0xC008AE05,
		"KVM_GET_MSRS":               0xC008AE88,
		"KVM_SET_MSRS":               0x4008AE89,
		"KVM_IRQFD":                  0x4020AE76,
		"KVM_IOEVENTFD":              0x4040AE79,
		"KVM_SET_GSI_ROUTING":        0x4008AE6A,
		"KVM_GET_IRQCHIP":            0xC208AE62,
		"KVM_SET_IRQCHIP":            0x8208AE63,
		"KVM_GET_LAPIC":              0x8400AE8E,
		"KVM_GET_VCPU_EVENTS":        0x8040AE9F,
		"KVM_SET_VCPU_EVENTS":        0x4040AEA0,
		"KVM_GET_XSAVE2":             0x9000AECF,
		"KVM_SET_IDENTITY_MAP_ADDR":  0x4008AE48,
		"KVM_TRANSLATE":              0xC018AE85,
	}
	got := ioctlNumbers()
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %#x, want %#x", name, got[name], w)
		}
	}
}

func TestIocRejectsOversizedArgument(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("ioc accepted a 16 KiB argument size, which overflows the 14-bit field")
		}
	}()
	ioc(iocRead, 0x01, 1<<14)
}

// TestIoctlNumbersAgainstHeaders prints every KVM_* request number with gcc
// and compares with the Go values.
func TestIoctlNumbersAgainstHeaders(t *testing.T) {
	nums := ioctlNumbers()
	exprs := make([]string, 0, len(nums))
	for name := range nums {
		exprs = append(exprs, name)
	}
	got := cValues(t, exprs)
	for name, v := range nums {
		if got[name] != uint64(v) {
			t.Errorf("%s = %#x in Go, %#x in linux/kvm.h", name, v, got[name])
		}
	}
}

// cValues compiles a C program that includes linux/kvm.h and prints each
// expression as an unsigned 64-bit value. It skips the test, saying why,
// when gcc or the headers are absent.
func cValues(t *testing.T, exprs []string) map[string]uint64 {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skipf("gcc not found (%v): values not compared with the headers", err)
	}
	if _, err := os.Stat("/usr/include/linux/kvm.h"); err != nil {
		t.Skipf("/usr/include/linux/kvm.h missing (apt-get install linux-libc-dev): %v", err)
	}
	var src strings.Builder
	src.WriteString("#include <stdio.h>\n#include <linux/kvm.h>\nint main(void) {\n")
	for _, e := range exprs {
		fmt.Fprintf(&src, "\tprintf(\"%s %%llu\\n\", (unsigned long long)(%s));\n", e, e)
	}
	src.WriteString("\treturn 0;\n}\n")
	dir := t.TempDir()
	cfile, bin := filepath.Join(dir, "values.c"), filepath.Join(dir, "values")
	if err := os.WriteFile(cfile, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-o", bin, cfile).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("running values program: %v", err)
	}
	got := map[string]uint64{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			t.Fatalf("bad line %q", sc.Text())
		}
		v, err := strconv.ParseUint(val, 10, 64)
		if err != nil {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		got[name] = v
	}
	if len(got) != len(exprs) {
		t.Fatalf("program printed %d values, want %d", len(got), len(exprs))
	}
	return got
}
