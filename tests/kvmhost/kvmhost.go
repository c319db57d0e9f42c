package kvmhost

import (
	"bufio"
	"context"
	"debug/elf"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EnvInside is set in the environment of a command that runs inside the
// test host, so that a re-executed test binary does not try to nest again.
const EnvInside = "KVMSTACK_IN_KVMHOST"

// ErrNotPrepared means build/kvmhost lacks the kernel or modules: run
// tests/kvmhost/build.sh (make kit does).
var ErrNotPrepared = errors.New("nested test host not prepared (run tests/kvmhost/build.sh)")

// Config says what to run in the test host.
type Config struct {
	// Dir holds vmlinuz and the kvm modules (build/kvmhost).
	Dir string
	// Files are host paths to copy in at the same absolute path; shared
	// libraries of dynamically linked ELF files are added automatically.
	Files []string
	// Args is the command; Args[0] must be among Files or in busybox.
	Args []string
	// Env is added to the command's environment (KEY=VALUE).
	Env []string
	// WorkDir is the command's working directory (created if missing).
	WorkDir string
	// MemoryMiB and CPUs size the test host; defaults 6144 and 1. Guests
	// with more vCPUs than the test host has still run, time-shared.
	MemoryMiB int
	CPUs      int
	// Output receives the command's console output.
	Output io.Writer
}

// Available reports whether the test host can be started here, and if not,
// why.
func Available(dir string) error {
	for _, f := range []string{"vmlinuz", "irqbypass.ko", "kvm.ko", "kvm-amd.ko"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("%w: %v", ErrNotPrepared, err)
		}
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return fmt.Errorf("%w: %v", ErrNotPrepared, err)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		return fmt.Errorf("%w: busybox-static: %v", ErrNotPrepared, err)
	}
	return nil
}

// The init script of the test host. It reports the command's status on the
// console in a line the runner parses, because QEMU's own exit status says
// nothing about the guest's command.
const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /bin /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s
# The runner's keepalive bytes on the serial line must wake the host, not
# echo back into the output as blank lines.
stty -F /dev/ttyS0 -echo 2>/dev/null
for m in irqbypass kvm kvm-amd; do
  insmod /kvmhost/$m.ko || { echo "KVMHOST-EXIT=125"; poweroff -f; }
done
# Optional modules (TAPs for virtio-net; veth, bridges and VXLAN for the
# agent's networks): present when build.sh extracted them, in load order.
for m in tun llc stp bridge veth udp_tunnel ip6_udp_tunnel vxlan; do
  [ -f /kvmhost/$m.ko ] && { insmod /kvmhost/$m.ko || echo "kvmhost: insmod $m failed"; }
done
ip link set lo up
. /kvmhost/env
mkdir -p "$KVMHOST_WORKDIR" && cd "$KVMHOST_WORKDIR"
# The command comes on the kernel command line (base64), so that one
# archive serves every boot of a prepared Host.
for w in $(cat /proc/cmdline); do
  case "$w" in kvmhost.cmd=*) echo "${w#kvmhost.cmd=}" | base64 -d > /kvmhost/cmd ;; esac
done
# A heartbeat for the runner: a test host whose timers stopped cannot tick
# (docs/KVM-HOSTS.md, "The whole test host wedges").
( while :; do echo KVMHOST-TICK; sleep 5; done ) &
/bin/busybox sh /kvmhost/cmd </dev/null
rc=$?
echo "KVMHOST-EXIT=$rc"
# The status also leaves through QEMU's isa-debug-exit port, which cannot
# be garbled by kernel messages interleaved on the console.
printf "\\$(printf %03o $((rc & 127)))" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
`

// optionalModules are loaded when build.sh provided them; tests that need
// them skip without (tun: TAP devices for virtio-net; the rest: veth pairs,
// bridges and VXLAN for the agent's networks).
var optionalModules = []string{"tun.ko", "llc.ko", "stp.ko", "bridge.ko", "veth.ko", "udp_tunnel.ko", "ip6_udp_tunnel.ko", "vxlan.ko"}

var exitLine = regexp.MustCompile(`KVMHOST-EXIT=(\d+)`)

const tickLine = "KVMHOST-TICK"

// ErrWedged means the test host stopped ticking and a nudge on its serial
// line did not wake it.
var ErrWedged = errors.New("test host wedged")

// Liveness of a test host: its first tick must come within bootGrace of the
// start, and later ones within silence of each other; after a silence the
// runner sends a byte to the serial line (an interrupt the host must
// handle) and gives it wakeGrace to tick again.
var (
	keepalive = time.Second
	bootGrace = 2 * time.Minute
	silence   = 30 * time.Second
	wakeGrace = 30 * time.Second
)

// Run boots the test host, runs the command, and returns its exit status.
func Run(ctx context.Context, cfg Config) (int, error) {
	h, err := Prepare(cfg)
	if err != nil {
		return -1, err
	}
	defer h.Close()
	return h.Exec(ctx, cfg.Args, nil)
}

// Host is a prepared test host: its initramfs is written once and booted
// afresh for every Exec, so a command that wedges the test host costs one
// boot, not the files' packing again.
type Host struct {
	cfg     Config
	tmp     string
	archive string
}

// maxCmdline keeps the kernel command line under x86's COMMAND_LINE_SIZE
// (2048) with room for the fixed options.
const maxCmdline = 1800

// Prepare checks the test host's kernel and modules and writes its
// initramfs with cfg's files and environment.
func Prepare(cfg Config) (*Host, error) {
	if err := Available(cfg.Dir); err != nil {
		return nil, err
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 6144
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	if cfg.Output == nil {
		cfg.Output = os.Stdout
	}
	tmp, err := os.MkdirTemp("", "kvmhost-")
	if err != nil {
		return nil, err
	}
	h := &Host{cfg: cfg, tmp: tmp, archive: filepath.Join(tmp, "initrd.cpio")}
	if err := writeArchive(h.archive, cfg); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("kvmhost initramfs: %w", err)
	}
	return h, nil
}

// Close removes the prepared initramfs.
func (h *Host) Close() error { return os.RemoveAll(h.tmp) }

// Exec boots the test host, runs args there and returns its exit status.
// Every console line goes to the configured Output and, when watch is not
// nil, to watch, which may cancel ctx to end a run that stopped making
// progress.
func (h *Host) Exec(ctx context.Context, args []string, watch func(line string)) (int, error) {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	enc := base64.StdEncoding.EncodeToString([]byte(strings.Join(quoted, " ") + "\n"))
	if len(enc) > maxCmdline {
		return -1, fmt.Errorf("kvmhost: command too long for the kernel command line (%d bytes encoded)", len(enc))
	}
	cfg := h.cfg
	monitor := filepath.Join(h.tmp, "monitor")
	_ = os.Remove(monitor)
	// One vCPU in the test host (see Config.CPUs): with two, multi-threaded
	// TCG often ran a stale translation of kernel code the host had just
	// patched through int3 when KVM flipped static keys ("Oops: int3"), and
	// single-threaded TCG stalled nested guests inside KVM_RUN for minutes.
	// loglevel=4 lets soft-lockup, hung-task and RCU-stall reports through,
	// which is what a wedged test host has to say. No CMPXCHG16B: nested
	// guests' cmpxchg16b now and then left garbage in RFLAGS under this TCG
	// (Debian's kernel double-faulted in SLUB right after one,
	// docs/KVM-HOSTS.md); without it in the host, KVM hides it from guests
	// and their kernels take the path without it.
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-M", "q35", "-accel", "tcg,thread=multi", "-cpu", "EPYC,+svm,+npt,-tsc-deadline,-cx16",
		"-smp", strconv.Itoa(cfg.CPUs), "-m", strconv.Itoa(cfg.MemoryMiB),
		"-kernel", filepath.Join(cfg.Dir, "vmlinuz"), "-initrd", h.archive,
		"-append", "console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init kvmhost.cmd="+enc,
		"-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x01",
		"-monitor", "unix:"+monitor+",server=on,wait=off")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return -1, err
	}
	cmd.Stderr = io.Discard // TCG feature warnings
	cmd.WaitDelay = 5 * time.Second
	// A run cancelled because it wedged says where the test host's CPU was
	// before it dies: with RIP and CR3 one can tell the host kernel from a
	// nested guest, which is all a frozen test host can still tell.
	cmd.Cancel = func() error {
		if state, err := monitorCommand(monitor, "info registers"); err == nil {
			fmt.Fprintf(cfg.Output, "kvmhost: test host CPU when cancelled:\n%s\n", state)
		}
		return cmd.Process.Kill()
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return -1, err
	}
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("start qemu: %w", err)
	}
	live := newLiveness(time.Now())
	wedged := make(chan struct{})
	stopLive := make(chan struct{})
	defer close(stopLive)
	nudge := func() { _, _ = stdin.Write([]byte("\r")) }
	go live.watch(stopLive, func(msg string) { fmt.Fprintln(cfg.Output, "kvmhost: "+msg) },
		nudge, func() { close(wedged); _ = cmd.Cancel() })
	// The keepalive: a byte on the serial line every keepalive interval is
	// an interrupt the test host must take, which re-arms a timer it lost,
	// so a lost timer interrupt costs at most that long instead of the
	// liveness check's half minute (docs/KVM-HOSTS.md).
	go func() {
		t := time.NewTicker(keepalive)
		defer t.Stop()
		for {
			select {
			case <-stopLive:
				return
			case <-t.C:
				nudge()
			}
		}
	}()
	status := -1
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if m := exitLine.FindStringSubmatch(line); m != nil {
			status, _ = strconv.Atoi(m[1])
			continue
		}
		if strings.Contains(line, tickLine) {
			live.tick(time.Now())
			if line = strings.TrimSpace(strings.Replace(line, tickLine, "", 1)); line == "" {
				continue
			}
		}
		fmt.Fprintln(cfg.Output, line)
		if watch != nil {
			watch(line)
		}
	}
	werr := cmd.Wait()
	// isa-debug-exit makes QEMU exit with (value << 1) | 1.
	if code := cmd.ProcessState.ExitCode(); code > 0 && code&1 == 1 && ctx.Err() == nil {
		status = code >> 1
	}
	if status < 0 {
		select {
		case <-wedged:
			return -1, fmt.Errorf("kvmhost: %w", ErrWedged)
		default:
		}
		if ctx.Err() != nil {
			return -1, fmt.Errorf("kvmhost: %w", ctx.Err())
		}
		return -1, fmt.Errorf("kvmhost: test host ended without a status (qemu: %v)", werr)
	}
	return status, nil
}

// liveness follows a test host's heartbeat.
type liveness struct {
	mu     sync.Mutex
	start  time.Time
	last   time.Time // zero until the first tick
	nudged time.Time // zero unless a nudge is outstanding
}

func newLiveness(start time.Time) *liveness { return &liveness{start: start} }

func (l *liveness) tick(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = now
}

// check decides what to do at now: nothing, nudge the host, or give up.
func (l *liveness) check(now time.Time) (nudge, wedged bool, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.nudged.IsZero() {
		if l.last.After(l.nudged) {
			l.nudged = time.Time{}
			return false, false, "test host ticks again after the nudge"
		}
		if now.Sub(l.nudged) > wakeGrace {
			return false, true, fmt.Sprintf("test host did not wake within %v of the nudge: wedged", wakeGrace)
		}
		return false, false, ""
	}
	switch {
	case l.last.IsZero() && now.Sub(l.start) > bootGrace:
		l.nudged = now
		return true, false, fmt.Sprintf("test host has not ticked %v after its start; nudging its serial line", bootGrace)
	case !l.last.IsZero() && now.Sub(l.last) > silence:
		l.nudged = now
		return true, false, fmt.Sprintf("test host silent for %v; nudging its serial line", now.Sub(l.last).Round(time.Second))
	}
	return false, false, ""
}

func (l *liveness) watch(stop <-chan struct{}, say func(string), nudge, giveUp func()) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			n, w, msg := l.check(now)
			if msg != "" {
				say(msg)
			}
			if n {
				nudge()
			}
			if w {
				giveUp()
				return
			}
		}
	}
}

// monitorCommand runs one human monitor command over QEMU's monitor socket
// and returns what it printed.
func monitorCommand(sock, command string) (string, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(command + "\n")); err != nil {
		return "", err
	}
	var out strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		out.Write(buf[:n])
		// The reply ends with the next prompt after the echoed command.
		if s := out.String(); strings.Count(s, "(qemu)") >= 2 || err != nil {
			break
		}
	}
	s := strings.ReplaceAll(out.String(), "\r", "")
	// Drop the banner and the echo (the monitor redraws its line with
	// escape sequences as it echoes): keep what follows the last redraw.
	if i := strings.LastIndex(s, command); i >= 0 {
		s = s[i+len(command):]
		s = strings.TrimPrefix(s, "\x1b[K")
	}
	return strings.TrimSuffix(strings.TrimSpace(s), "(qemu)"), nil
}

func writeArchive(name string, cfg Config) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	defer f.Close()
	c := newCPIOWriter(f)
	if err := c.addBytes("/init", 0o755, []byte(initScript)); err != nil {
		return err
	}
	if err := c.addFile("/bin/busybox", "/bin/busybox"); err != nil {
		return err
	}
	for _, m := range []string{"irqbypass.ko", "kvm.ko", "kvm-amd.ko"} {
		if err := c.addFile("/kvmhost/"+m, filepath.Join(cfg.Dir, m)); err != nil {
			return err
		}
	}
	for _, m := range optionalModules {
		p := filepath.Join(cfg.Dir, m)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := c.addFile("/kvmhost/"+m, p); err != nil {
			return err
		}
	}
	files := map[string]string{}
	for _, p := range cfg.Files {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		files[abs] = abs
		libs, err := sharedLibraries(abs)
		if err != nil {
			return err
		}
		for _, l := range libs {
			files[l] = l
		}
	}
	for _, k := range sortedKeys(files) {
		if err := c.addFile(k, files[k]); err != nil {
			return err
		}
	}
	var env strings.Builder
	env.WriteString("export " + EnvInside + "=1\n")
	env.WriteString("export PATH=/bin:/sbin:/usr/bin:/usr/sbin\n")
	env.WriteString("export HOME=/tmp TMPDIR=/tmp\n")
	env.WriteString("export KVMHOST_WORKDIR=" + shellQuote(cfg.WorkDir) + "\n")
	for _, e := range cfg.Env {
		k, v, ok := strings.Cut(e, "=")
		if !ok {
			return fmt.Errorf("env %q: want KEY=VALUE", e)
		}
		env.WriteString("export " + k + "=" + shellQuote(v) + "\n")
	}
	if err := c.addBytes("/kvmhost/env", 0o644, []byte(env.String())); err != nil {
		return err
	}
	return c.close()
}

// sharedLibraries lists the interpreter and libraries a dynamically linked
// ELF needs, through ldd; a static or non-ELF file needs none.
func sharedLibraries(p string) ([]string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	dynamic := false
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			dynamic = true
		}
	}
	if !dynamic {
		return nil, nil
	}
	out, err := exec.Command("ldd", p).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", p, err)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		for _, field := range strings.Fields(line) {
			if strings.HasPrefix(field, "/") {
				libs = append(libs, field)
			}
		}
	}
	return libs, nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
