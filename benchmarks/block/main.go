package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// phases in the order blkio runs them.
var phases = []string{"seqwrite", "seqread", "randread", "randwrite"}

var (
	beginRe = regexp.MustCompile(`BENCH BEGIN (\w+)`)
	endRe   = regexp.MustCompile(`BENCH END (\w+) bytes=(\d+) ns=(\d+) ops=(\d+)`)
)

// phase is one measured phase.
type phase struct {
	bytes, ns, ops int64
	exits          uint64
}

func (p phase) mbs() float64 {
	if p.ns == 0 {
		return 0
	}
	return float64(p.bytes) / 1e6 / (float64(p.ns) / 1e9)
}

func (p phase) iops() float64 {
	if p.ns == 0 {
		return 0
	}
	return float64(p.ops) / (float64(p.ns) / 1e9)
}

func (p phase) exitsPerMiB() float64 {
	if p.bytes == 0 || p.exits == 0 {
		return 0
	}
	return float64(p.exits) / (float64(p.bytes) / (1 << 20))
}

func main() {
	vmmBin := flag.String("vmm", "build/bin/vmm", "vmm binary")
	kit := flag.String("kit", "build/kit", "guest kit directory")
	qemu := flag.String("qemu", "qemu-system-x86_64", "QEMU binary for the reference")
	blkio := flag.String("blkio", "build/bench/blkio", "static guest benchmark program")
	mke2fs := flag.String("mke2fs", "/usr/sbin/mke2fs", "mke2fs, to make the tools disk")
	secs := flag.Int("seconds", 5, "time bound of each phase")
	sizeMiB := flag.Int("size", 64, "MiB moved by each sequential phase (and the random range)")
	only := flag.String("only", "vmm,qemu", "comma-separated: vmm, qemu")
	verbose := flag.Bool("v", false, "copy guest consoles to stderr")
	flag.Parse()
	if err := mountDebugfs(); err != nil {
		fmt.Fprintf(os.Stderr, "blockbench: exits unavailable: %v\n", err)
	}
	dir, err := os.MkdirTemp("", "blockbench")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	tools, err := toolsDisk(dir, *mke2fs, *blkio)
	if err != nil {
		fail(err)
	}
	kernel, initrd := filepath.Join(*kit, "vmlinux"), filepath.Join(*kit, "initrd.img")
	script := fmt.Sprintf("mkdir -p /t && mount -t ext4 -o ro /dev/vda /t && /t/blkio /dev/vdb %d %d", *sizeMiB, *secs)
	cmdline := "console=ttyS0 reboot=k panic=-1 kit.run=" + base64.StdEncoding.EncodeToString([]byte(script))
	timeout := 5*time.Minute + time.Duration(4**secs)*time.Second
	sides := map[string]map[string]phase{}
	var errs []error
	run := func(name string, mk func(bench string) (string, []string)) {
		bench := filepath.Join(dir, name+".img")
		if err := os.WriteFile(bench, nil, 0o644); err != nil {
			fail(err)
		}
		if err := os.Truncate(bench, int64(*sizeMiB)<<20); err != nil {
			fail(err)
		}
		bin, args := mk(bench)
		res, err := measure(timeout, *verbose, bin, args...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		sides[name] = res
	}
	if strings.Contains(*only, "vmm") {
		run("vmm", func(bench string) (string, []string) {
			return *vmmBin, []string{"--kernel", kernel, "--initrd", initrd, "--memory", "256M", "--cmdline", cmdline,
				"--disk", "path=" + tools + ",readonly=on", "--disk", "path=" + bench}
		})
	}
	if strings.Contains(*only, "qemu") {
		run("qemu", func(bench string) (string, []string) {
			return *qemu, []string{"-enable-kvm", "-M", "pc", "-cpu", "host", "-m", "256", "-smp", "1",
				"-kernel", kernel, "-initrd", initrd, "-append", cmdline,
				"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
				"-drive", "file=" + tools + ",if=none,id=d0,format=raw,readonly=on",
				"-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
				"-drive", "file=" + bench + ",if=none,id=d1,format=raw,cache=writeback,aio=threads",
				"-device", "virtio-blk-pci,drive=d1,disable-legacy=on"}
		})
	}
	v, q := sides["vmm"], sides["qemu"]
	fmt.Printf("virtio-blk, raw disk in the guest with O_DIRECT, %d MiB sequential, %d s bound per phase\n", *sizeMiB, *secs)
	fmt.Printf("| %-30s | %12s | %12s | %9s |\n", "", "vmm", "QEMU", "vmm/QEMU")
	fmt.Printf("|%s|%s|%s|%s|\n", strings.Repeat("-", 32), strings.Repeat("-", 14), strings.Repeat("-", 14), strings.Repeat("-", 11))
	row := func(name string, a, b float64) {
		fmt.Printf("| %-30s | %12s | %12s | %9s |\n", name, num(a), num(b), ratio(a, b))
	}
	row("sequential write MB/s (1 MiB)", v["seqwrite"].mbs(), q["seqwrite"].mbs())
	row("sequential read MB/s (1 MiB)", v["seqread"].mbs(), q["seqread"].mbs())
	row("random read IOPS (4 KiB)", v["randread"].iops(), q["randread"].iops())
	row("random write IOPS (4 KiB)", v["randwrite"].iops(), q["randwrite"].iops())
	for _, p := range phases {
		row("KVM exits per MiB, "+p, v[p].exitsPerMiB(), q[p].exitsPerMiB())
	}
	for _, err := range errs {
		fmt.Fprintln(os.Stderr, "blockbench:", err)
	}
	if len(errs) > 0 {
		os.Exit(1)
	}
}

// toolsDisk makes a small ext4 image holding blkio.
func toolsDisk(dir, mke2fs, blkio string) (string, error) {
	root := filepath.Join(dir, "tools")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	b, err := os.ReadFile(blkio)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(root, "blkio"), b, 0o755); err != nil {
		return "", err
	}
	img := filepath.Join(dir, "tools.ext4")
	if out, err := exec.Command(mke2fs, "-q", "-F", "-t", "ext4", "-d", root, img, "16M").CombinedOutput(); err != nil {
		return "", fmt.Errorf("mke2fs: %v\n%s", err, out)
	}
	return img, nil
}

// measure boots one guest and samples the host's KVM exit counter at the
// phase boundaries the guest prints.
func measure(timeout time.Duration, verbose bool, bin string, args ...string) (map[string]phase, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.WaitDelay = 5 * time.Second
	res := map[string]phase{}
	var console strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		begin := map[string]uint64{}
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			console.WriteString(line + "\n")
			if verbose {
				fmt.Fprintln(os.Stderr, line)
			}
			if m := beginRe.FindStringSubmatch(line); m != nil {
				begin[m[1]] = kvmExits()
			}
			if m := endRe.FindStringSubmatch(line); m != nil {
				var p phase
				p.bytes, _ = strconv.ParseInt(m[2], 10, 64)
				p.ns, _ = strconv.ParseInt(m[3], 10, 64)
				p.ops, _ = strconv.ParseInt(m[4], 10, 64)
				if e0, ok := begin[m[1]]; ok && e0 > 0 {
					p.exits = kvmExits() - e0
				}
				res[m[1]] = p
			}
		}
	}()
	err := cmd.Run()
	pw.Close()
	wg.Wait()
	if len(res) != len(phases) {
		return res, fmt.Errorf("%d of %d phases finished (%v); console tail:\n%s", len(res), len(phases), err, tailLines(console.String(), 30))
	}
	return res, nil
}

func num(v float64) string {
	if v == 0 {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
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
	const exits = "/sys/kernel/debug/kvm/exits"
	if _, err := os.Stat(exits); err == nil {
		return nil
	}
	if err := unix.Mount("debugfs", "/sys/kernel/debug", "debugfs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount debugfs: %w", err)
	}
	_, err := os.Stat(exits)
	return err
}

func tailLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "blockbench:", err)
	os.Exit(1)
}
