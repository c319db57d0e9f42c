package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	vmmapi "kvmstack/vmm/api"
)

// The test binary doubles as a fake vmm: run with fakeVMMEnv set, TestMain
// calls fakeVMMMain instead of the tests. The fake serves the parts of the
// control API the agent uses on --api-socket, checks its files exist like
// vmm does, prints a boot line on its console (stdout) and exits with
// vmm's statuses: 0 after POST /vm/shutdown, 5 after POST /vm/kill or
// SIGTERM, 2 for bad flags.
const fakeVMMEnv = "KVMSTACK_AGENT_FAKE_VMM"

// fakeFailFile in the instance directory (the fake's working directory)
// makes it fail at start with status 1 while it exists.
const fakeFailFile = "fail-start"

// fakeExitOnStart makes the fake fail at start with this status.
const fakeExitOnStart = "KVMSTACK_AGENT_FAKE_VMM_EXIT"

func TestMain(m *testing.M) {
	if os.Getenv(fakeVMMEnv) == "1" {
		os.Exit(fakeVMMMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func fakeVMMMain(args []string) (code int) {
	fs := flag.NewFlagSet("vmm", flag.ContinueOnError)
	exitFile := fs.String("exit-status-file", "", "")
	sock := fs.String("api-socket", "", "")
	kernel := fs.String("kernel", "", "")
	initrd := fs.String("initrd", "", "")
	fs.Int("cpus", 1, "")
	fs.String("memory", "", "")
	fs.String("serial", "", "")
	fs.String("cmdline", "", "")
	fs.Bool("rng", false, "")
	var disks, nets multiFlag
	fs.Var(&disks, "disk", "")
	fs.Var(&nets, "net", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *exitFile != "" {
		// Like vmm: its own status, for an agent that adopted it.
		defer func() { os.WriteFile(*exitFile, []byte(fmt.Sprintf("exit status %d\n", code)), 0o600) }()
	}
	if _, err := os.Stat(fakeFailFile); err == nil {
		fmt.Fprintln(os.Stderr, "vmm: fake failure at start (fail-start file)")
		return 1
	}
	if s := os.Getenv(fakeExitOnStart); s != "" {
		fmt.Fprintln(os.Stderr, "vmm: fake failure at start")
		var code int
		fmt.Sscan(s, &code)
		return code
	}
	files := []string{*kernel, *initrd}
	for _, d := range disks {
		p, _, _ := strings.Cut(strings.TrimPrefix(d, "path="), ",")
		files = append(files, p)
	}
	for _, f := range files {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			fmt.Fprintln(os.Stderr, "vmm:", err)
			return 2
		}
	}
	l, err := net.Listen("unix", *sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmm:", err)
		return 2
	}
	defer os.Remove(*sock)
	fmt.Printf("fake vmm %d booted with %d disks and nets %q\n", os.Getpid(), len(disks), nets)
	// The serial port's input: echo lines to the console like a shell.
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			fmt.Printf("input: %s\n", sc.Text())
		}
		fmt.Println("input: EOF")
	}()
	exit := make(chan int, 1)
	srv := &http.Server{Handler: newFakeVMM(func(code int) {
		select {
		case exit <- code:
		default:
		}
	})}
	go srv.Serve(l)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case code = <-exit:
	case <-sigs:
		code = 5
	}
	// Let the answer that asked for the exit go out first.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	srv.Shutdown(ctx)
	cancel()
	return code
}

// fakeVMM is the fake's API handler.
type fakeVMM struct {
	mu    sync.Mutex
	state string
	exit  func(code int)
}

func newFakeVMM(exit func(int)) http.Handler {
	f := &fakeVMM{state: "running", exit: exit}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /vm", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		json.NewEncoder(w).Encode(vmmapi.VMInfo{State: f.state, VCPUs: 1})
	})
	mux.HandleFunc("PUT /vm/state", func(w http.ResponseWriter, r *http.Request) {
		var b vmmapi.StateBody
		json.NewDecoder(r.Body).Decode(&b)
		f.mu.Lock()
		defer f.mu.Unlock()
		if b.State != "running" && b.State != "paused" {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(vmmapi.Error{Code: "bad_request", Message: "state " + b.State})
			return
		}
		f.state = b.State
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /vm/shutdown", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		f.exit(0)
	})
	mux.HandleFunc("POST /vm/kill", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		f.exit(5)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "vmm_exits_total{reason=\"io\"} 1")
	})
	return mux
}
