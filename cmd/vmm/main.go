// Command vmm runs one virtual machine on /dev/kvm until the guest powers
// off, resets or crashes, or a signal stops it. Its exit status says which
// (see the Exit* constants and docs/VMM.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"kvmstack/firmware"
	"kvmstack/vmm"
	"kvmstack/vmm/api"
)

// Exit statuses. They are part of vmm's interface: the agent and the tests
// branch on them.
const (
	ExitPowerOff = 0 // the guest powered off
	ExitError    = 1 // vmm failed: host, KVM, or an instruction KVM cannot emulate
	ExitUsage    = 2 // bad flags or files
	ExitReset    = 3 // the guest asked for a reboot
	ExitCrash    = 4 // the guest crashed: triple fault or kernel panic (pvpanic)
	ExitStopped  = 5 // stopped by SIGINT or SIGTERM
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

type options struct {
	cfg       vmm.Config
	serial    string
	logLevel  slog.Level
	apiSocket string
	// waitForAPI: --api-socket without guest flags; the guest comes
	// from API requests.
	waitForAPI bool
	// restore is a snapshot directory to resume instead of booting.
	restore string
	// seccomp is on, off or log (docs/SECCOMP.md).
	seccomp string
	// exitStatusFile receives "exit status N" when vmm ends, for a
	// supervisor that is not vmm's parent and so cannot wait for it.
	exitStatusFile string
}

// guestFlags are the flags that describe a guest; with --api-socket and
// none of them, vmm waits for the API to configure one.
var guestFlags = []string{"kernel", "initrd", "cmdline", "cpus", "memory", "pvh", "disk", "net", "rng", "config"}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("vmm", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o := &options{}
	fs.StringVar(&o.cfg.Kernel, "kernel", "", "kernel: ELF vmlinux or bzImage (required)")
	fs.StringVar(&o.cfg.Initrd, "initrd", "", "initramfs image")
	fs.StringVar(&o.cfg.Cmdline, "cmdline", "", "kernel command line (default \""+vmm.DefaultCmdline+"\")")
	fs.IntVar(&o.cfg.CPUs, "cpus", 1, "number of vCPUs")
	mem := fs.String("memory", "128M", "guest RAM: a number with K, M, G or T (binary units); a plain number is MiB")
	fs.StringVar(&o.serial, "serial", "stdio", "COM1: stdio, file:PATH, or none")
	fs.BoolVar(&o.cfg.PreferPVH, "pvh", false, "enter an ELF kernel through its PVH note")
	var disks diskFlags
	var nets netFlags
	fs.Var(&disks, "disk", "virtio-blk disk: path=PATH[,readonly=on][,id=ID] (repeatable)")
	fs.Var(&nets, "net", "virtio-net on a TAP: tap=NAME[,mac=MAC][,netns=PATH] (repeatable)")
	fs.BoolVar(&o.cfg.RNG, "rng", false, "virtio-rng device fed by the host's getrandom")
	configFile := fs.String("config", "", "JSON file with the same settings (kernel, initrd, cmdline, cpus, memory, disks, nets, rng); flags override it")
	fs.StringVar(&o.apiSocket, "api-socket", "", "serve the control API on this unix socket (mode 0600); without guest flags, wait for the API to configure and start the guest")
	fs.StringVar(&o.restore, "restore", "", "resume the guest saved in this snapshot directory (PUT /snapshot) instead of booting one; excludes the guest flags")
	fs.StringVar(&o.seccomp, "seccomp", "on", "system call filter once the guest is set up: on, off (debugging), or log (allow and log calls off the list)")
	fs.StringVar(&o.exitStatusFile, "exit-status-file", "", "write \"exit status N\" to this file when vmm ends (for a supervisor that cannot wait for vmm, such as an agent that adopted it)")
	level := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	help := fs.Bool("help", false, "show this help")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *help {
		fs.SetOutput(stderr)
		fmt.Fprintln(stderr, "usage: vmm --kernel PATH [--initrd PATH] [--cmdline STR] [--cpus N] [--memory SIZE] [--serial stdio|file:PATH|none]\n"+
			"           [--disk path=PATH[,readonly=on][,id=ID][,bw=R][,iops=R]]... [--net tap=NAME[,mac=MAC][,netns=PATH][,bw=R][,iops=R]]... [--rng]\n"+
			"           [--config vm.json] [--api-socket PATH] [--seccomp on|off|log] [--exit-status-file PATH]\n"+
			"       vmm --api-socket PATH [--serial ...]   (configure and start the guest through the API)\n"+
			"       vmm --restore DIR [--api-socket PATH] [--serial ...]")
		fs.PrintDefaults()
		return nil, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.cfg.Disks, o.cfg.Nets = disks, nets
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *configFile != "" {
		fc, err := loadConfigFile(*configFile)
		if err != nil {
			return nil, fmt.Errorf("--config: %w", err)
		}
		applyFile(o, fc, set, mem)
	}
	var err error
	if o.cfg.MemoryBytes, err = ParseSize(*mem); err != nil {
		return nil, fmt.Errorf("--memory: %w", err)
	}
	if err := o.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	if o.seccomp != "on" && o.seccomp != "off" && o.seccomp != "log" {
		return nil, fmt.Errorf("--seccomp %q: want on, off or log", o.seccomp)
	}
	if o.serial != "stdio" && o.serial != "none" && !strings.HasPrefix(o.serial, "file:") {
		return nil, fmt.Errorf("--serial %q: want stdio, file:PATH or none", o.serial)
	}
	guest := slices.ContainsFunc(guestFlags, func(f string) bool { return set[f] })
	if o.restore != "" {
		// The snapshot holds the whole configuration.
		if guest {
			return nil, errors.New("--restore takes the guest's configuration from the snapshot: no --kernel, --disk, ... with it")
		}
		return o, nil
	}
	if o.apiSocket != "" && !guest {
		o.waitForAPI = true
		return o, nil
	}
	if err := o.cfg.Validate(); err != nil {
		return nil, err
	}
	files := []struct{ flag, path string }{{"--kernel", o.cfg.Kernel}, {"--initrd", o.cfg.Initrd}}
	for _, d := range o.cfg.Disks {
		files = append(files, struct{ flag, path string }{"--disk", d.Path})
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		st, err := os.Stat(f.path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.flag, err)
		}
		// A disk may be a block device; kernels and initrds are files.
		if !st.Mode().IsRegular() && (f.flag != "--disk" || st.Mode()&os.ModeDevice == 0) {
			return nil, fmt.Errorf("%s %s: not a regular file", f.flag, f.path)
		}
	}
	return o, nil
}

// ParseSize reads a size such as 512M, 4G, 4GiB or 128 (MiB).
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB"), "B")
	if t == "" {
		return 0, fmt.Errorf("size %q: empty", s)
	}
	shift := 20
	switch t[len(t)-1] {
	case 'K':
		shift, t = 10, t[:len(t)-1]
	case 'M':
		shift, t = 20, t[:len(t)-1]
	case 'G':
		shift, t = 30, t[:len(t)-1]
	case 'T':
		shift, t = 40, t[:len(t)-1]
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional K, M, G or T suffix", s)
	}
	if n > (1<<63)>>shift {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n << shift, nil
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runContext(ctx, args, stdin, stdout, stderr)
}

// runContext is run with the signals already turned into ctx: its end
// stops the guest (or the wait for one) with ExitStopped.
func runContext(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitPowerOff
	}
	if err != nil {
		fmt.Fprintf(stderr, "vmm: %v (see vmm --help)\n", err)
		return ExitUsage
	}
	if o.exitStatusFile != "" {
		defer func() { writeExitStatus(o.exitStatusFile, code, stderr) }()
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	switch {
	case o.serial == "stdio":
		o.cfg.Serial = stdout
		o.cfg.SerialInput = stdin
	case strings.HasPrefix(o.serial, "file:"):
		f, err := os.OpenFile(strings.TrimPrefix(o.serial, "file:"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			fmt.Fprintf(stderr, "vmm: --serial: %v\n", err)
			return ExitUsage
		}
		defer f.Close()
		o.cfg.Serial = f
	}
	l := &launcher{runCtx: ctx, log: log, serial: o.cfg.Serial, serialInput: o.cfg.SerialInput, seccomp: o.seccomp,
		launched: make(chan *launch, 1)}
	var srv *api.Server
	if o.apiSocket != "" {
		ln, err := api.Listen(o.apiSocket)
		if err != nil {
			fmt.Fprintf(stderr, "vmm: --api-socket: %v\n", err)
			return ExitUsage
		}
		opts := api.Options{Log: log}
		if o.waitForAPI {
			opts.Launcher = l
		}
		srv = api.NewServer(opts)
		srvCtx, srvStop := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- srv.Serve(srvCtx, ln) }()
		// The API stays up until the guest has stopped and vmm is about
		// to exit, so a client sees the final state; then the socket
		// goes away.
		defer func() {
			srvStop()
			if err := <-served; err != nil {
				log.Warn("api server", "err", err)
			}
		}()
	}
	var la *launch
	if o.waitForAPI {
		log.Info("waiting for the API to start the guest", "socket", o.apiSocket)
		select {
		case la = <-l.launched:
		case <-ctx.Done():
			fmt.Fprintln(stderr, "vmm: stopped by signal")
			return ExitStopped
		}
	} else if o.restore != "" {
		m, err := l.restore(ctx, o.restore)
		if err != nil {
			fmt.Fprintf(stderr, "vmm: %v\n", err)
			if restoreUsageError(err) || isFileError(err) {
				return ExitUsage
			}
			return ExitError
		}
		if err := l.secure(); err != nil {
			closeQuietly(m, log)
			fmt.Fprintf(stderr, "vmm: %v\n", err)
			return ExitError
		}
		cfg := restoredConfig(m)
		c := l.run(m, cfg)
		la = <-l.launched
		if srv != nil {
			srv.Attach(c, cfg)
		}
		if err := m.Resume(); err != nil {
			// Stopped before it could resume (a signal): the outcome
			// says so below.
			log.Warn("resuming the restored guest", "err", err)
		}
	} else {
		m, err := vmm.New(o.cfg, log)
		if err != nil {
			fmt.Fprintf(stderr, "vmm: %v\n", err)
			if errors.Is(err, vmm.ErrConfig) || isFileError(err) {
				return ExitUsage
			}
			return ExitError
		}
		if err := l.secure(); err != nil {
			closeQuietly(m, log)
			fmt.Fprintf(stderr, "vmm: %v\n", err)
			return ExitError
		}
		cfg := api.ConfigFromVMM(o.cfg)
		c := l.run(m, cfg)
		la = <-l.launched
		if srv != nil {
			srv.Attach(c, cfg)
		}
	}
	defer la.m.Close()
	res := <-la.done
	log.Info("guest stopped", "outcome", res.outcome.String(), "exits", la.m.ExitCounts())
	return exitStatus(res.outcome, res.err, stderr)
}

// exitStatus maps a run's outcome to vmm's exit status, saying on stderr
// why vmm ends unless the guest simply powered off.
func exitStatus(outcome vmm.Outcome, err error, stderr io.Writer) int {
	switch outcome {
	case vmm.OutcomePowerOff:
		return ExitPowerOff
	case vmm.OutcomeReset:
		fmt.Fprintln(stderr, "vmm: guest reset")
		return ExitReset
	case vmm.OutcomeCrash:
		fmt.Fprintf(stderr, "vmm: guest crashed: %v\n", err)
		return ExitCrash
	case vmm.OutcomeStopped:
		fmt.Fprintln(stderr, "vmm: stopped")
		return ExitStopped
	}
	fmt.Fprintf(stderr, "vmm: %v\n", err)
	return ExitError
}

// isFileError tells a kernel, initrd or command line the user got wrong
// (missing, unreadable, not a kernel, too big for the RAM) from a failure of
// the host.
func isFileError(err error) bool {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return true
	}
	for _, e := range []error{firmware.ErrUnknownFormat, firmware.ErrTruncated, firmware.ErrCorrupt,
		firmware.ErrUnsupported, firmware.ErrNoRoom, firmware.ErrTooLarge, firmware.ErrCmdline} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// writeExitStatus records vmm's exit status in the form os.ProcessState
// prints it, so that a supervisor reads the same line whether it waited
// for vmm or found the file. It runs under the seccomp filter: open, write
// and close are on its list.
func writeExitStatus(path string, code int, stderr io.Writer) {
	if err := os.WriteFile(path, []byte(fmt.Sprintf("exit status %d\n", code)), 0o600); err != nil {
		fmt.Fprintf(stderr, "vmm: --exit-status-file: %v\n", err)
	}
}
