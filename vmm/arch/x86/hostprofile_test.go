package x86

import (
	"testing"
	"testing/fstest"
)

func TestDetectHostProfileFS(t *testing.T) {
	const (
		pvmFlags = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae hypervisor lahf_lm\n\nprocessor\t: 1\nflags\t\t: fpu\n"
		vmxFlags = "processor\t: 0\nflags\t\t: fpu vme vmx pae\n"
		svmFlags = "processor\t: 0\nflags\t\t: fpu svm pae\n"
	)
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	dir := &fstest.MapFile{Mode: 0o755 | 1<<31}
	tests := []struct {
		name      string
		fs        fstest.MapFS
		emulating bool
		wantErr   bool
	}{
		{"thisMachine", fstest.MapFS{"proc/cpuinfo": file(pvmFlags), "sys/module/kvm_pvm": dir}, false, false},
		{"pvmBound", fstest.MapFS{"proc/cpuinfo": file(pvmFlags), "sys/module/kvm_pvm": dir, "dev/kvm": file("")}, true, false},
		{"intel", fstest.MapFS{"proc/cpuinfo": file(vmxFlags), "sys/module/kvm_pvm": dir, "dev/kvm": file("")}, false, false},
		{"amd", fstest.MapFS{"proc/cpuinfo": file(svmFlags), "sys/module/kvm_amd": dir, "dev/kvm": file("")}, false, false},
		{"noPVM", fstest.MapFS{"proc/cpuinfo": file(pvmFlags), "dev/kvm": file("")}, false, false},
		{"noCpuinfo", fstest.MapFS{"dev/kvm": file("")}, false, true},
		{"noFlagsLine", fstest.MapFS{"proc/cpuinfo": file("processor: 0\n")}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := DetectHostProfileFS(tt.fs)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if p.Emulating != tt.emulating {
				t.Fatalf("Emulating = %v (%s), want %v", p.Emulating, p.Reason, tt.emulating)
			}
			if err == nil && p.Reason == "" {
				t.Error("no reason given")
			}
		})
	}
}

func TestDetectHostProfileHere(t *testing.T) {
	// Whatever this host is, detection must not fail on a real /proc.
	p, err := DetectHostProfile()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("host profile: emulating=%v (%s)", p.Emulating, p.Reason)
}
