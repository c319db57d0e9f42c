package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Files in an instance directory.
const (
	fileDisk       = "disk.raw"
	fileSocket     = "vmm.sock"
	filePID        = "vmm.pid"
	fileExitStatus = "exit-status"
	fileConsole    = "console.log"
	fileConsoleIn  = "console.in"
	fileVMMLog     = "vmm.log"
	fileActionSeq  = "action-seq"
	fileRan        = "ran" // a vmm came up here: the disk may hold guest data
)

// statusUnknown is the exit status of a vmm this agent did not start: only
// its parent (an earlier agent, or init once that died) could wait for it.
const statusUnknown = "exit status unknown (not our child)"

// vmmProcess is one running vmm, started by this agent or adopted.
type vmmProcess struct {
	pid     int
	adopted bool
	started time.Time
	done    chan struct{} // closed once the process has exited

	// Set before done is closed.
	code   int    // exit code; -1 if killed by a signal or unknown
	status string // "exit status 4", "signal: killed", statusUnknown

	signal func(sig syscall.Signal) error
}

// exited reports whether the process has ended.
func (p *vmmProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startVMM starts vmm with args in its own session (so the agent's death
// or its terminal's hang-up does not reach it), with the serial console on
// stdout appended to console.log and its own log on stderr appended to
// vmm.log. Both are opened O_APPEND, which is what lets the agent rotate
// the console by copy and truncate while vmm keeps writing. The pid file
// is written before startVMM returns; when the process exits its status is
// written to the exit-status file, which a later agent that adopted the
// process (and so cannot wait for it) reads.
func startVMM(path string, args, env []string, dir string) (*vmmProcess, error) {
	os.Remove(filepath.Join(dir, fileExitStatus))
	// Only called when no vmm of this instance runs: a socket file left is
	// a dead vmm's (one killed has no chance to remove it).
	os.Remove(filepath.Join(dir, fileSocket))
	console, err := os.OpenFile(filepath.Join(dir, fileConsole), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vmm: console log: %w", err)
	}
	defer console.Close()
	logf, err := os.OpenFile(filepath.Join(dir, fileVMMLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vmm: log: %w", err)
	}
	defer logf.Close()
	in, err := consoleInput(dir)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, console, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vmm: start %s: %w", path, err)
	}
	p := &vmmProcess{pid: cmd.Process.Pid, started: time.Now(), done: make(chan struct{}),
		signal: func(sig syscall.Signal) error { return cmd.Process.Signal(sig) }}
	if err := writeFileAtomic(filepath.Join(dir, filePID), []byte(strconv.Itoa(p.pid)+"\n")); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("vmm: pid file: %w", err)
	}
	// The reaper outlives Run if the agent is stopped while the vmm runs:
	// it ends when the vmm does, and leaves its status for whoever adopts.
	go func() {
		cmd.Wait()
		ps := cmd.ProcessState
		p.code, p.status = ps.ExitCode(), ps.String()
		writeFileAtomic(filepath.Join(dir, fileExitStatus), []byte(p.status+"\n"))
		close(p.done)
	}()
	return p, nil
}

// consoleInput opens the instance's console input FIFO (made if missing)
// for vmm's stdin. It is opened read-write, so vmm itself holds a writer and
// never reads end-of-file: the serial input stays usable after the agent
// that started it is gone, and whoever has console access writes to the
// FIFO (an agent streaming `instance console`, an operator with echo).
func consoleInput(dir string) (*os.File, error) {
	p := filepath.Join(dir, fileConsoleIn)
	if err := unix.Mkfifo(p, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("vmm: console input: %w", err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("vmm: console input: %w", err)
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		f.Close()
		return nil, fmt.Errorf("vmm: console input %s is not a FIFO", p)
	}
	return f, nil
}

// ErrNotOurs means a pid file names no live vmm of this instance.
var ErrNotOurs = errors.New("not our vmm")

// adoptVMM finds the vmm an earlier agent started for the instance in dir:
// the pid file's process must be alive, its command line must be a vmm
// serving this directory's socket (pids are reused), and the socket must
// answer. watch ends when ctx does.
func adoptVMM(ctx context.Context, vmmPath, dir string) (*vmmProcess, error) {
	raw, err := os.ReadFile(filepath.Join(dir, filePID))
	if err != nil {
		return nil, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return nil, fmt.Errorf("pid file %q: %w", raw, ErrNotOurs)
	}
	// Open the pidfd first: whatever the checks below see is then the
	// process the pidfd refers to, unless it died in between.
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w (%w)", pid, ErrNotOurs, err)
	}
	keep := false
	defer func() {
		if !keep {
			unix.Close(pfd)
		}
	}()
	sock := filepath.Join(dir, fileSocket)
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w (%w)", pid, ErrNotOurs, err)
	}
	if !isOurVMM(cmdline, vmmPath, sock) {
		return nil, fmt.Errorf("pid %d runs %q: %w", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}), ErrNotOurs)
	}
	vc := NewVMMClient(sock)
	defer vc.Close()
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := vc.Info(ictx); err != nil {
		return nil, fmt.Errorf("pid %d: socket does not answer: %w (%w)", pid, ErrNotOurs, err)
	}
	keep = true
	p := &vmmProcess{pid: pid, adopted: true, started: time.Now(), done: make(chan struct{}),
		signal: func(sig syscall.Signal) error { return unix.PidfdSendSignal(pfd, sig, nil, 0) }}
	go p.watch(ctx, pfd, dir)
	return p, nil
}

// isOurVMM reports whether a /proc cmdline is vmmPath's program serving
// socket.
func isOurVMM(cmdline []byte, vmmPath, socket string) bool {
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(args) < 3 || filepath.Base(args[0]) != filepath.Base(vmmPath) {
		return false
	}
	for i, a := range args[1 : len(args)-1] {
		if (a == "--api-socket" || a == "-api-socket") && args[i+2] == socket {
			return true
		}
	}
	for _, a := range args[1:] {
		if a == "--api-socket="+socket || a == "-api-socket="+socket {
			return true
		}
	}
	return false
}

// watch waits on the pidfd of an adopted vmm. Only the real parent can
// collect the exit status: if that was an earlier agent still running its
// reaper (tests) or a vmm that writes one, the exit-status file has it;
// it is given a moment to appear, else the status is unknown.
func (p *vmmProcess) watch(ctx context.Context, pfd int, dir string) {
	defer unix.Close(pfd)
	fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 500)
		if ctx.Err() != nil {
			// Run ended: the next agent adopts the process again.
			return
		}
		if err == nil && n > 0 {
			break
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			break
		}
	}
	p.code, p.status = -1, statusUnknown
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		// Empty: vmm is between creating and writing it.
		if raw, err := os.ReadFile(filepath.Join(dir, fileExitStatus)); err == nil && len(bytes.TrimSpace(raw)) > 0 {
			p.status = strings.TrimSpace(string(raw))
			p.code = parseExitCode(p.status)
			break
		}
	}
	close(p.done)
}

// parseExitCode reads the code back from an os.ProcessState string
// ("exit status 3"); -1 for anything else (signals).
func parseExitCode(s string) int {
	if n, ok := strings.CutPrefix(s, "exit status "); ok {
		if c, err := strconv.Atoi(n); err == nil {
			return c
		}
	}
	return -1
}

// writeFileAtomic writes path through a temporary file and a rename.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// rotateConsole keeps the console log under max bytes: past it the log is
// copied to console.log.1 (older ones shifted up to console.log.N, the
// oldest dropped) and truncated in place. vmm's descriptor is O_APPEND, so
// its next write lands at the new end; bytes written between the copy and
// the truncation are lost, as with logrotate's copytruncate.
func rotateConsole(path string, max int64, keep int) error {
	st, err := os.Stat(path)
	if err != nil || st.Size() <= max {
		return nil
	}
	for i := keep - 1; i >= 1; i-- {
		os.Rename(fmt.Sprintf("%s.%d", path, i), fmt.Sprintf("%s.%d", path, i+1))
	}
	// Copy and truncate, since vmm keeps the log open in append mode. What
	// vmm writes between the last read and the truncate is lost; the
	// second read below narrows that window to one system call.
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	if keep >= 1 {
		if err := os.WriteFile(path+".1", data, 0o600); err != nil {
			return err
		}
	}
	if more, err := io.ReadAll(f); err == nil && len(more) > 0 && keep >= 1 {
		if g, err := os.OpenFile(path+".1", os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
			_, _ = g.Write(more)
			g.Close()
		}
	}
	return os.Truncate(path, 0)
}
