package x86

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
)

// HostProfile describes what kind of KVM the host offers, and so which
// workarounds a guest needs. The zero value is hardware KVM (vmx/svm): no
// workaround at all.
type HostProfile struct {
	// Emulating is set when /dev/kvm is the software kvm_pvm module on a
	// CPU without vmx/svm: guest CPL 0 code runs in KVM's instruction
	// emulator, which cannot run some instructions (DESIGN.md, "KVM on
	// this host"). It selects the CPUID mask, the guest command-line
	// extras, the int3 fixup and never writing MSR 0x10a.
	Emulating bool
	// Reason says why the profile was chosen, for the log.
	Reason string
	// TSCDeadline reports KVM_CAP_TSC_DEADLINE_TIMER: the in-kernel
	// LAPIC emulates the TSC-deadline timer mode. Some KVMs leave the
	// bit out of KVM_GET_SUPPORTED_CPUID and advertise it only through
	// the capability, so the caller sets this after checking it.
	TSCDeadline bool
	// BrokenXSETBV is set when a guest's xsetbv does not reach KVM
	// (ProbeXSETBV): KVM keeps XCR0 at x87 only while the guest kernel
	// believes it enabled SSE and AVX state, so XSAVE-based context
	// switching would lose registers. Seen with kvm-amd nested under
	// QEMU's TCG (the tests' kvmhost). The guest then gets no XSAVE.
	BrokenXSETBV bool
}

// DetectHostProfile inspects the running host through "/". It cannot see
// KVM capabilities: the caller fills in TSCDeadline.
func DetectHostProfile() (HostProfile, error) {
	return DetectHostProfileFS(os.DirFS("/"))
}

// DetectHostProfileFS inspects a host whose root file system is root (paths
// without the leading slash: "proc/cpuinfo", "sys/module/kvm_pvm",
// "dev/kvm"), so tests can describe a host in an fstest.MapFS. The host is
// the emulating kind when the kvm_pvm module is present, /dev/kvm exists,
// and the CPU flags in /proc/cpuinfo name neither vmx nor svm: with either
// flag, /dev/kvm belongs to kvm_intel or kvm_amd even if kvm_pvm is built
// in too.
func DetectHostProfileFS(root fs.FS) (HostProfile, error) {
	flags, err := cpuFlags(root)
	if err != nil {
		return HostProfile{}, err
	}
	if slices.Contains(flags, "vmx") || slices.Contains(flags, "svm") {
		return HostProfile{Reason: "CPU has hardware virtualization (vmx/svm)"}, nil
	}
	if _, err := fs.Stat(root, "sys/module/kvm_pvm"); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return HostProfile{Reason: "no vmx/svm and no kvm_pvm module"}, nil
		}
		return HostProfile{}, fmt.Errorf("detect host profile: %w", err)
	}
	if _, err := fs.Stat(root, "dev/kvm"); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return HostProfile{Reason: "kvm_pvm present but /dev/kvm absent (module not bound)"}, nil
		}
		return HostProfile{}, fmt.Errorf("detect host profile: %w", err)
	}
	return HostProfile{Emulating: true, Reason: "/dev/kvm is kvm_pvm on a CPU without vmx/svm: guest kernel code is emulated"}, nil
}

// cpuFlags returns the first "flags" line of /proc/cpuinfo, split.
func cpuFlags(root fs.FS) ([]string, error) {
	f, err := root.Open("proc/cpuinfo")
	if err != nil {
		return nil, fmt.Errorf("detect host profile: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(name) == "flags" {
			return strings.Fields(value), nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("detect host profile: read /proc/cpuinfo: %w", err)
	}
	return nil, fmt.Errorf("detect host profile: /proc/cpuinfo has no flags line")
}

// CmdlineExtras is what the guest kernel's command line needs on this host,
// "" on hardware KVM. On the emulating host KVM_SET_CPUID2 does not hide
// most of leaf 1 ECX (only the bits KVM itself reports as supported follow
// the VMM's table), so Linux is told to ignore the features itself:
// clearcpuid= with the names from Linux 6.12's cpufeatures (kept short: its
// parser copies at most 127 characters, and noxsave clears the whole XSAVE
// family, AVX and AVX-512 included, through the kernel's dependency table).
//
// With only BrokenXSETBV it is "noxsave": KVM_SET_CPUID2 hides XSAVE on
// such a (hardware-kind) KVM already, and the parameter keeps a kernel
// that looks at the host CPU some other way from using it.
func (p HostProfile) CmdlineExtras() string {
	if !p.Emulating {
		if p.BrokenXSETBV {
			return "noxsave"
		}
		return ""
	}
	var names []string
	for _, h := range emulatorHidden {
		if h.clearcpuid != "" {
			names = append(names, h.clearcpuid)
		}
	}
	return "clearcpuid=" + strings.Join(names, ",") + " noxsave"
}
