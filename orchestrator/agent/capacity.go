package agent

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"kvmstack/orchestrator/state"
)

// MachineCapacity measures what this machine offers instances: the CPUs
// this process may run on (its affinity mask, which a cgroup or taskset
// narrows), MemTotal from /proc/meminfo, and the size of the filesystem
// holding dataDir.
func MachineCapacity(dataDir string) (state.Resources, error) {
	var r state.Resources
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err == nil && set.Count() > 0 {
		r.VCPUs = set.Count()
	} else {
		r.VCPUs = runtime.NumCPU()
	}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return r, fmt.Errorf("agent: capacity: %w", err)
	}
	defer f.Close()
	kb, err := memTotalKB(f)
	if err != nil {
		return r, err
	}
	r.MemoryMB = int(kb / 1024)
	var st unix.Statfs_t
	if err := unix.Statfs(dataDir, &st); err != nil {
		return r, fmt.Errorf("agent: capacity: statfs %s: %w", dataDir, err)
	}
	r.DiskGB = int(st.Blocks * uint64(st.Bsize) >> 30)
	return r, nil
}

// memTotalKB reads the MemTotal line of /proc/meminfo ("MemTotal: N kB").
func memTotalKB(f io.Reader) (uint64, error) {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			n, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("agent: capacity: MemTotal %q: %w", fields[1], err)
			}
			return n, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("agent: capacity: /proc/meminfo: %w", err)
	}
	return 0, fmt.Errorf("agent: capacity: no MemTotal in /proc/meminfo")
}
