package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"128", 128 << 20, true}, {"128M", 128 << 20, true}, {"4G", 4 << 30, true}, {"4GiB", 4 << 30, true},
		{"512mb", 512 << 20, true}, {"65536K", 64 << 20, true}, {"1T", 1 << 40, true},
		{"", 0, false}, {"0", 0, false}, {"-1G", 0, false}, {"1.5G", 0, false}, {"G", 0, false},
		{"99999999999999999999", 0, false}, {"9999999999T", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// TestUsageErrors: every bad invocation is one line on stderr and status 2.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"noKernel", nil, "no kernel"},
		{"unknownFlag", []string{"--kernel", "/etc/hostname", "--bogus"}, "bogus"},
		{"badMemory", []string{"--kernel", "/etc/hostname", "--memory", "lots"}, "--memory"},
		{"badCPUs", []string{"--kernel", "/etc/hostname", "--cpus", "0"}, "vCPUs"},
		{"missingKernel", []string{"--kernel", "/nonexistent/vmlinux"}, "/nonexistent/vmlinux"},
		{"kernelIsDir", []string{"--kernel", "/etc"}, "not a regular file"},
		{"missingInitrd", []string{"--kernel", "/etc/hostname", "--initrd", "/nonexistent/initrd"}, "/nonexistent/initrd"},
		{"badSerial", []string{"--kernel", "/etc/hostname", "--serial", "tcp:1"}, "--serial"},
		{"badSeccomp", []string{"--kernel", "/etc/hostname", "--seccomp", "maybe"}, "--seccomp"},
		{"extraArg", []string{"--kernel", "/etc/hostname", "stray"}, "stray"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			status := run(tt.args, strings.NewReader(""), &stdout, &stderr)
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if status != ExitUsage || len(lines) != 1 || !strings.Contains(lines[0], tt.want) {
				t.Fatalf("status %d, stderr %q; want %d and one line containing %q", status, stderr.String(), ExitUsage, tt.want)
			}
		})
	}
}

// TestExitStatusFile checks that vmm leaves its status where a supervisor
// that is not its parent can read it, in os.ProcessState's wording.
func TestExitStatusFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		file   string
		args   []string
		status int
		want   string
	}{
		{"usageAfterFlags", filepath.Join(dir, "a"), []string{"--kernel", "/etc/hostname", "--serial", "file:/nonexistent/console"}, ExitUsage, "exit status 2\n"},
		{"help", filepath.Join(dir, "b"), []string{"--help"}, ExitPowerOff, ""},
		{"unwritable", filepath.Join(dir, "missing", "c"), []string{"--kernel", "/etc/hostname", "--serial", "file:/nonexistent/console"}, ExitUsage, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			status := run(append([]string{"--exit-status-file", tt.file}, tt.args...), strings.NewReader(""), &stdout, &stderr)
			if status != tt.status {
				t.Fatalf("status %d, want %d; stderr %q", status, tt.status, stderr.String())
			}
			got, err := os.ReadFile(tt.file)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("file written: %q", got)
				}
				if tt.name == "unwritable" && !strings.Contains(stderr.String(), "--exit-status-file") {
					t.Fatalf("the failed write is not reported: %q", stderr.String())
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("file %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}
