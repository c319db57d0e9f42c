package main

import (
	"context"
	"errors"
	"flag"
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

	"encoding/base64"

	"golang.org/x/sys/unix"

	"kvmstack/netdev"
)

const (
	tapName  = "benchtap0"
	hostAddr = "10.0.2.1"
	guestMAC = "52:54:00:12:34:56"
	sinkPort = 5001
	srcPort  = 5002
)

// guestScript measures from inside the guest; the host side bounds each
// TCP phase in time by closing the connection.
const guestScript = `ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ping -c 3 -i 0.2 10.0.2.1 >/dev/null
ping -c 20 -i 0.1 10.0.2.1 | tail -1
nc 10.0.2.1 5001 </dev/zero
echo "DOWN $(nc 10.0.2.1 5002 | wc -c)"`

var (
	rttRe  = regexp.MustCompile(`round-trip min/avg/max = ([\d.]+)/([\d.]+)/([\d.]+) ms`)
	downRe = regexp.MustCompile(`DOWN\s+(\d+)`)
)

var (
	verbose   bool
	bootLimit time.Duration
)

// result is one side's measurements.
type result struct {
	upMBs, downMBs     float64 // guest→host, host→guest
	rttMs              float64
	upExits, downExits float64 // KVM exits per MiB (all exits the kernel counted)
	err                error
}

func main() {
	vmmBin := flag.String("vmm", "build/bin/vmm", "vmm binary")
	kit := flag.String("kit", "build/kit", "guest kit directory")
	qemu := flag.String("qemu", "qemu-system-x86_64", "QEMU binary for the reference")
	secs := flag.Int("seconds", 10, "duration of each TCP phase")
	only := flag.String("only", "vmm,qemu", "comma-separated: vmm, qemu")
	flag.BoolVar(&verbose, "v", false, "copy each guest's console to stderr")
	flag.DurationVar(&bootLimit, "boot-limit", 5*time.Minute, "time allowed per guest beyond the TCP phases")
	flag.Parse()
	if err := mountDebugfs(); err != nil {
		fmt.Fprintf(os.Stderr, "netbench: exits unavailable: %v\n", err)
	}
	kernel, initrd := filepath.Join(*kit, "vmlinux"), filepath.Join(*kit, "initrd.img")
	cmdline := "console=ttyS0 reboot=k panic=-1 kit.run=" + base64.StdEncoding.EncodeToString([]byte(guestScript))
	d := time.Duration(*secs) * time.Second
	sides := map[string]result{}
	if strings.Contains(*only, "vmm") {
		sides["vmm"] = measure(d, *vmmBin, "--kernel", kernel, "--initrd", initrd, "--memory", "256M",
			"--cmdline", cmdline, "--net", "tap="+tapName+",mac="+guestMAC)
	}
	if strings.Contains(*only, "qemu") {
		sides["qemu"] = measure(d, *qemu, "-enable-kvm", "-M", "pc", "-cpu", "host", "-m", "256", "-smp", "1",
			"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
			"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
			"-netdev", "tap,id=n0,ifname="+tapName+",script=no,downscript=no,vhost=off",
			"-device", "virtio-net-pci,netdev=n0,mac="+guestMAC+",disable-legacy=on,romfile=")
	}
	v, q := sides["vmm"], sides["qemu"]
	for name, r := range sides {
		if r.err != nil {
			fmt.Fprintf(os.Stderr, "netbench: %s: %v\n", name, r.err)
		}
	}
	fmt.Printf("virtio-net, %v per TCP phase (busybox nc in the guest, Go sockets on the host, same tap)\n", d)
	fmt.Printf("| %-32s | %12s | %12s | %9s |\n", "", "vmm", "QEMU", "vmm/QEMU")
	fmt.Printf("|%s|%s|%s|%s|\n", strings.Repeat("-", 34), strings.Repeat("-", 14), strings.Repeat("-", 14), strings.Repeat("-", 11))
	row := func(name string, a, b float64, unit string) {
		fmt.Printf("| %-32s | %12s | %12s | %9s |\n", name, num(a, unit), num(b, unit), ratio(a, b))
	}
	row("guest→host TCP MB/s", v.upMBs, q.upMBs, "")
	row("host→guest TCP MB/s", v.downMBs, q.downMBs, "")
	row("ICMP round trip (avg of 20) ms", v.rttMs, q.rttMs, "")
	row("KVM exits per MiB, guest→host", v.upExits, q.upExits, "")
	row("KVM exits per MiB, host→guest", v.downExits, q.downExits, "")
	if v.err != nil || (q.err != nil && strings.Contains(*only, "qemu")) {
		os.Exit(1)
	}
}

func num(v float64, _ string) string {
	if v == 0 {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// measure boots one guest with args inside a fresh namespace and collects
// the measurements.
func measure(d time.Duration, bin string, args ...string) (r result) {
	ns, err := netdev.NewNamespace()
	if err != nil {
		return result{err: err}
	}
	defer ns.Close()
	for _, step := range []func() error{
		func() error { return ns.CreateTap(tapName) },
		func() error { return ns.AddAddress(tapName, hostAddr+"/24") },
		func() error { return ns.SetUp(tapName) },
	} {
		if err := step(); err != nil {
			return result{err: err}
		}
	}
	sink, err := ns.Listen("tcp", net.JoinHostPort(hostAddr, strconv.Itoa(sinkPort)))
	if err != nil {
		return result{err: err}
	}
	defer sink.Close()
	src, err := ns.Listen("tcp", net.JoinHostPort(hostAddr, strconv.Itoa(srcPort)))
	if err != nil {
		return result{err: err}
	}
	defer src.Close()

	ctx, cancel := context.WithTimeout(context.Background(), bootLimit+3*d)
	defer cancel()
	var wg sync.WaitGroup
	var upBytes int64
	var upDur, downDur time.Duration
	var upExits, downExits uint64
	wg.Add(2)
	go func() {
		defer wg.Done()
		c, err := accept(ctx, sink)
		if err != nil {
			return
		}
		defer c.Close()
		e0, t0 := kvmExits(), time.Now()
		c.SetReadDeadline(t0.Add(d))
		upBytes, _ = io.Copy(io.Discard, c)
		upDur, upExits = time.Since(t0), kvmExits()-e0
	}()
	go func() {
		defer wg.Done()
		c, err := accept(ctx, src)
		if err != nil {
			return
		}
		buf := make([]byte, 256<<10)
		e0, t0 := kvmExits(), time.Now()
		c.SetWriteDeadline(t0.Add(d))
		for time.Since(t0) < d {
			if _, err := c.Write(buf); err != nil {
				break
			}
		}
		// The guest reports what arrived; closing ends its nc.
		c.Close()
		downDur, downExits = time.Since(t0), kvmExits()-e0
	}()

	cmd := exec.CommandContext(ctx, bin, args...)
	var out strings.Builder
	var w io.Writer = &out
	if verbose {
		w = io.MultiWriter(&out, os.Stderr)
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.WaitDelay = 5 * time.Second
	if err := ns.Start(cmd); err != nil {
		return result{err: err}
	}
	werr := cmd.Wait()
	sink.Close()
	src.Close()
	wg.Wait()
	console := out.String()
	if m := rttRe.FindStringSubmatch(console); m != nil {
		r.rttMs, _ = strconv.ParseFloat(m[2], 64)
	}
	if upDur > 0 {
		r.upMBs = float64(upBytes) / 1e6 / upDur.Seconds()
		r.upExits = perMiB(upExits, upBytes)
	}
	if m := downRe.FindStringSubmatch(console); m != nil && downDur > 0 {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.downMBs = float64(n) / 1e6 / downDur.Seconds()
		r.downExits = perMiB(downExits, n)
	}
	if r.upMBs == 0 || r.downMBs == 0 || r.rttMs == 0 {
		r.err = fmt.Errorf("incomplete run (%v); console tail:\n%s", werr, tailLines(console, 30))
	}
	return r
}

func perMiB(exits uint64, bytes int64) float64 {
	if bytes == 0 || exits == 0 {
		return 0
	}
	return float64(exits) / (float64(bytes) / (1 << 20))
}

func accept(ctx context.Context, ln net.Listener) (net.Conn, error) {
	if tl, ok := ln.(*net.TCPListener); ok {
		dl, _ := ctx.Deadline()
		tl.SetDeadline(dl)
	}
	return ln.Accept()
}

// kvmExits is the host kernel's count of guest exits over all VMs (one VM
// runs at a time here); 0 when debugfs has no KVM statistics.
func kvmExits() uint64 {
	b, err := os.ReadFile("/sys/kernel/debug/kvm/exits")
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func mountDebugfs() error {
	if _, err := os.Stat("/sys/kernel/debug/kvm/exits"); err == nil {
		return nil
	}
	if err := unix.Mount("debugfs", "/sys/kernel/debug", "debugfs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount debugfs: %w", err)
	}
	if _, err := os.Stat("/sys/kernel/debug/kvm/exits"); err != nil {
		return err
	}
	return nil
}

func tailLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
