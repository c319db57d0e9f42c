package agent

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
)

// FuzzIsOurVMM feeds arbitrary /proc/PID/cmdline contents (any process can
// set its own) to the adoption check: it must never panic, and it may only
// accept a command line that names the socket right after --api-socket.
func FuzzIsOurVMM(f *testing.F) {
	const sock = "/d/instances/i/vmm.sock"
	f.Add([]byte("/usr/bin/vmm\x00--api-socket\x00" + sock + "\x00"))
	f.Add([]byte("vmm\x00--api-socket=" + sock + "\x00"))
	f.Add([]byte("vmm\x00--api-socket\x00"))
	f.Add([]byte("\x00\x00\x00"))
	f.Add([]byte("sh\x00-c\x00vmm --api-socket " + sock))
	f.Fuzz(func(t *testing.T, cmdline []byte) {
		if !isOurVMM(cmdline, "/opt/vmm", sock) {
			return
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if !strings.HasSuffix("/"+args[0], "/vmm") {
			t.Fatalf("accepted program %q", args[0])
		}
		if !bytes.Contains(cmdline, []byte("--api-socket\x00"+sock)) && !bytes.Contains(cmdline, []byte("-api-socket\x00"+sock)) &&
			!bytes.Contains(cmdline, []byte("api-socket="+sock)) {
			t.Fatalf("accepted %q without the socket", cmdline)
		}
	})
}

// FuzzExitStatus reads exit-status files, which a vmm's directory holds
// and anything with access to it could write.
func FuzzExitStatus(f *testing.F) {
	for _, s := range []string{"exit status 0", "exit status 255", "signal: killed", "exit status -1", "exit status 99999999999999999999", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := parseExitCode(s)
		if c != -1 && s != "exit status "+strconv.Itoa(c) && !strings.HasPrefix(s, "exit status ") {
			t.Fatalf("parseExitCode(%q) = %d", s, c)
		}
	})
}

// FuzzMemTotal parses /proc/meminfo-like text.
func FuzzMemTotal(f *testing.F) {
	f.Add("MemTotal:       16318076 kB\n")
	f.Add("MemTotal:\n")
	f.Add("MemTotal: -5 kB\n")
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := memTotalKB(strings.NewReader(s)); err == nil && !strings.Contains(s, "MemTotal:") {
			t.Fatalf("found %d without a MemTotal line", n)
		}
	})
}
