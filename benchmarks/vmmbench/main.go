package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"kvmstack/vmm/devices"
	"kvmstack/vmm/kvm"
)

func main() {
	exits := flag.Int("exits", 100000, "port-I/O exits per loop")
	runs := flag.Int("runs", 5, "boots per side for the boot-time median")
	vmmBin := flag.String("vmm", "build/bin/vmm", "vmm binary")
	cLoop := flag.String("pioexit-c", "build/bench/pioexit-c", "the C exit loop (pioexit.c)")
	kit := flag.String("kit", "build/kit", "guest kit directory")
	qemu := flag.String("qemu", "qemu-system-x86_64", "QEMU binary for the reference boots")
	only := flag.String("only", "exit,boot,rss", "comma-separated: exit, boot, rss")
	flag.Parse()
	var rows [][]string
	want := func(s string) bool { return strings.Contains(","+*only+",", ","+s+",") }
	fail := false
	report := func(name string, err error) {
		fmt.Fprintf(os.Stderr, "vmmbench: %s: %v\n", name, err)
		fail = true
	}
	if want("exit") {
		goNS, err := goExitLoop(*exits)
		if err != nil {
			report("Go exit loop", err)
		}
		cNS, cerr := cExitLoop(*cLoop, *exits)
		if cerr != nil {
			report("C exit loop", cerr)
		}
		if err == nil && cerr == nil {
			rows = append(rows, []string{"port-I/O exit round trip", fmt.Sprintf("%.0f ns", goNS), fmt.Sprintf("%.0f ns (C loop)", cNS), ratio(goNS, cNS)})
		}
	}
	if want("boot") {
		kernel, initrd := filepath.Join(*kit, "vmlinux"), filepath.Join(*kit, "initrd.img")
		cmdline := "console=ttyS0 reboot=k panic=-1"
		vmmArgs := []string{"--kernel", kernel, "--initrd", initrd, "--memory", "128M", "--cmdline", cmdline}
		v, err := medianBoot(*runs, *vmmBin, vmmArgs)
		if err != nil {
			report("vmm boot", err)
		}
		qemuArgs := []string{"-enable-kvm", "-M", "microvm", "-cpu", "host", "-m", "128", "-smp", "1",
			"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
			"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"}
		q, qerr := medianBoot(*runs, *qemu, qemuArgs)
		if qerr != nil {
			report("QEMU boot", qerr)
		}
		if err == nil && qerr == nil {
			rows = append(rows, []string{fmt.Sprintf("boot to KIT READY (median of %d)", *runs), v.Round(time.Millisecond).String(),
				q.Round(time.Millisecond).String() + " (QEMU microvm)", ratio(float64(v), float64(q))})
		}
	}
	if want("rss") {
		r, err := rssOverTouched(*vmmBin, filepath.Join(*kit, "vmlinux"), filepath.Join(*kit, "initrd.img"))
		if err != nil {
			report("RSS", err)
		} else {
			rows = append(rows,
				[]string{"vmm RSS vs guest RAM resident", fmt.Sprintf("%d MiB", r.rss>>10), fmt.Sprintf("%d MiB guest RAM resident", r.guestResident>>10),
					fmt.Sprintf("+%d MiB vmm", (r.rss-r.guestResident)>>10)},
				[]string{"guest RAM resident vs used in guest", fmt.Sprintf("%d MiB", r.guestResident>>10), fmt.Sprintf("%d MiB used (MemTotal-MemFree)", r.guestUsed>>10),
					ratio(float64(r.guestResident), float64(r.guestUsed))})
		}
	}
	printTable([]string{"measure", "vmm", "reference", "vmm/ref"}, rows)
	if fail {
		os.Exit(1)
	}
}

func ratio(a, b float64) string { return fmt.Sprintf("%.2fx", a/b) }

func printTable(head []string, rows [][]string) {
	w := make([]int, len(head))
	for _, r := range append([][]string{head}, rows...) {
		for i, c := range r {
			w[i] = max(w[i], len(c))
		}
	}
	line := func(r []string) {
		var b strings.Builder
		for i, c := range r {
			fmt.Fprintf(&b, "| %-*s ", w[i], c)
		}
		fmt.Println(b.String() + "|")
	}
	line(head)
	sep := make([]string, len(head))
	for i := range sep {
		sep[i] = strings.Repeat("-", w[i])
	}
	line(sep)
	for _, r := range rows {
		line(r)
	}
}

// goExitLoop is the Go side of the exit benchmark: the same real-mode
// guest as pioexit.c, run with vmm/kvm and each exit dispatched through a
// devices.Bus as vmm's vCPU loop does.
func goExitLoop(n int) (float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sys, err := kvm.Open("")
	if err != nil {
		return 0, err
	}
	defer sys.Close()
	vm, err := sys.CreateVM()
	if err != nil {
		return 0, err
	}
	defer vm.Close()
	if err := vm.SetTSSAddr(0xfffb_d000); err != nil {
		return 0, err
	}
	mem, err := unix.Mmap(-1, 0, 0x10000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(mem)
	copy(mem[0x1000:], []byte{0xe6, 0x10, 0xeb, 0xfc}) // out 0x10,al; jmp -4
	if err := vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{MemorySize: uint64(len(mem)), UserspaceAddr: hostAddr(mem)}); err != nil {
		return 0, err
	}
	v, err := vm.CreateVCPU(0)
	if err != nil {
		return 0, err
	}
	defer v.Close()
	s, err := v.GetSregs()
	if err != nil {
		return 0, err
	}
	s.CS.Base, s.CS.Selector = 0, 0
	if err := v.SetSregs(s); err != nil {
		return 0, err
	}
	if err := v.SetRegs(kvm.Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		return 0, err
	}
	bus := devices.NewBus("pio")
	if err := bus.Register(0x10, 1, devices.Sink{}); err != nil {
		return 0, err
	}
	loop := func(n int) error {
		for range n {
			err := v.Run()
			for errors.Is(err, kvm.ErrInterrupted) {
				// Go's runtime preempts with SIGURG; vmm's loop re-enters too.
				err = v.Run()
			}
			if err != nil {
				return err
			}
			io, err := v.IO()
			if err != nil {
				return err
			}
			if !bus.Write(uint64(io.Port), io.Data) {
				return fmt.Errorf("exit on port %#x", io.Port)
			}
		}
		return nil
	}
	if err := loop(1000); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := loop(n); err != nil {
		return 0, err
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n), nil
}

func cExitLoop(bin string, n int) (float64, error) {
	out, err := exec.Command(bin, strconv.Itoa(n)).Output()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", bin, err)
	}
	return strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
}

var kitReady = regexp.MustCompile(`KIT READY cpus=\d+ mem=\d+`)

// bootOnce starts a VMM and returns the time until the guest prints KIT
// READY; the VMM is then left to power off (or killed after a grace time).
func bootOnce(bin string, args []string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	ready := time.Duration(0)
	var tailLines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if ready == 0 && kitReady.MatchString(line) {
			ready = time.Since(start)
		}
		tailLines = append(tailLines, line)
		if len(tailLines) > 20 {
			tailLines = tailLines[1:]
		}
	}
	werr := cmd.Wait()
	if ready == 0 {
		return 0, fmt.Errorf("%s: no KIT READY (%v, %s)\n%s", bin, werr, strings.TrimSpace(stderr.String()), strings.Join(tailLines, "\n"))
	}
	return ready, nil
}

func medianBoot(n int, bin string, args []string) (time.Duration, error) {
	var ds []time.Duration
	for range n {
		d, err := bootOnce(bin, args)
		if err != nil {
			return 0, err
		}
		ds = append(ds, d)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2], nil
}

type rssResult struct{ rss, guestResident, guestUsed uint64 } // kB

// rssOverTouched boots a 512 MiB guest that fills 64 MiB of its RAM, then
// reads vmm's resident set, the resident part of the guest RAM mapping
// (from smaps), and the RAM the guest says it uses.
func rssOverTouched(vmmBin, kernel, initrd string) (rssResult, error) {
	script := "dd if=/dev/zero of=/fill bs=1M count=64 2>/dev/null; " +
		"awk '/MemTotal/{t=$2} /MemFree/{f=$2} END{print \"USED_KB=\" t-f}' /proc/meminfo; sleep 60"
	run := "kit.run=" + b64(script)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, vmmBin, "--kernel", kernel, "--initrd", initrd, "--memory", "512M",
		"--cmdline", "console=ttyS0 reboot=k panic=-1 "+run)
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		return rssResult{}, err
	}
	var once sync.Once
	defer once.Do(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	go func() { _ = cmd.Wait(); pw.Close() }()
	used := regexp.MustCompile(`USED_KB=(\d+)`)
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if m := used.FindStringSubmatch(sc.Text()); m != nil {
			var r rssResult
			r.guestUsed, _ = strconv.ParseUint(m[1], 10, 64)
			go func() { _, _ = io.Copy(io.Discard, pr) }()
			var err error
			if r.rss, err = vmRSS(cmd.Process.Pid); err != nil {
				return r, err
			}
			r.guestResident, err = mappingRSS(cmd.Process.Pid, 512<<10)
			return r, err
		}
	}
	return rssResult{}, errors.New("guest never reported its memory use")
}

// mappingRSS is the Rss of the guest RAM mapping: the smallest mapping of
// at least sizeKB (the kernel may merge the RAM with a neighbouring
// anonymous mapping, so an exact size match is not reliable).
func mappingRSS(pid int, sizeKB uint64) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, err
	}
	var size, best, bestRSS uint64
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "Size:":
			size, _ = strconv.ParseUint(f[1], 10, 64)
		case "Rss:":
			if size >= sizeKB && (best == 0 || size < best) {
				best = size
				bestRSS, _ = strconv.ParseUint(f[1], 10, 64)
			}
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("no mapping of %d KiB or more in smaps", sizeKB)
	}
	return bestRSS, nil
}

func vmRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.ParseUint(f[1], 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}
