package x86

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"kvmstack/vmm/kvm"
)

// ErrCPUIDDump is wrapped by every ParseCPUIDDump error.
var ErrCPUIDDump = errors.New("bad CPUID dump")

// maxDumpEntries bounds a dump: KVM_GET_SUPPORTED_CPUID returns at most a
// few hundred entries.
const maxDumpEntries = 4096

// FormatCPUIDDump writes entries in the text capture format: one entry per
// line, "func=0x00000001 idx=0x0 flags=0x0 eax=0x... ebx=0x... ecx=0x...
// edx=0x...". It is how a host's KVM_GET_SUPPORTED_CPUID is recorded as a
// test fixture and how a vCPU's table is shown when debugging.
func FormatCPUIDDump(w io.Writer, entries []kvm.CPUIDEntry2) error {
	bw := bufio.NewWriter(w)
	for _, e := range entries {
		fmt.Fprintf(bw, "func=0x%08x idx=0x%x flags=0x%x eax=0x%08x ebx=0x%08x ecx=0x%08x edx=0x%08x\n",
			e.Function, e.Index, e.Flags, e.EAX, e.EBX, e.ECX, e.EDX)
	}
	return bw.Flush()
}

// ParseCPUIDDump reads the format FormatCPUIDDump writes. Blank lines and
// lines starting with '#' are ignored; every field must appear exactly once.
func ParseCPUIDDump(r io.Reader) ([]kvm.CPUIDEntry2, error) {
	var out []kvm.CPUIDEntry2
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		if len(out) == maxDumpEntries {
			return nil, fmt.Errorf("%w: more than %d entries", ErrCPUIDDump, maxDumpEntries)
		}
		e, err := parseDumpLine(text)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrCPUIDDump, line, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCPUIDDump, err)
	}
	return out, nil
}

func parseDumpLine(text string) (kvm.CPUIDEntry2, error) {
	var e kvm.CPUIDEntry2
	fields := map[string]*uint32{
		"func": &e.Function, "idx": &e.Index, "flags": &e.Flags,
		"eax": &e.EAX, "ebx": &e.EBX, "ecx": &e.ECX, "edx": &e.EDX,
	}
	seen := map[string]bool{}
	for _, f := range strings.Fields(text) {
		k, v, ok := strings.Cut(f, "=")
		dst, known := fields[k]
		if !ok || !known {
			return e, fmt.Errorf("field %q: want key=value with key one of func, idx, flags, eax, ebx, ecx, edx", f)
		}
		if seen[k] {
			return e, fmt.Errorf("field %q given twice", k)
		}
		seen[k] = true
		n, err := strconv.ParseUint(v, 0, 32)
		if err != nil {
			return e, fmt.Errorf("field %q: %w", k, err)
		}
		*dst = uint32(n)
	}
	if len(seen) != len(fields) {
		return e, fmt.Errorf("%d of %d fields", len(seen), len(fields))
	}
	return e, nil
}
