package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/console"
)

// fileConsoleKey in the data directory holds the key servers sign console
// requests with; it is registered with the host and kept across restarts.
const fileConsoleKey = "console.key"

// Console endpoint limits.
const (
	// consolePoll is how often a followed log is checked for new bytes;
	// consoleTypingPoll how often while someone types into the instance's
	// console (for consoleTyping after each input), so that echoes come
	// back at the pace of typing.
	consolePoll       = 100 * time.Millisecond
	consoleTypingPoll = 10 * time.Millisecond
	consoleTyping     = 3 * time.Second
	// consoleInputMax bounds one input request's body.
	consoleInputMax = 1 << 20
	// consoleInputTimeout is how long a write into the input FIFO may
	// wait for the vmm to read.
	consoleInputTimeout = 5 * time.Second
)

// consoleEndpoint is what the agent registers about its console endpoint.
type consoleEndpoint struct {
	addr, key string
}

// startConsole listens on ConsoleListen (if set) and serves instance
// consoles to the cluster's servers until ctx ends or stop is called. It
// fills a.console, which registration advertises.
func (a *hostAgent) startConsole(ctx context.Context) (stop func(), err error) {
	if a.cfg.ConsoleListen == "" {
		return func() {}, nil
	}
	key, err := loadConsoleKey(a.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	v, err := console.NewVerifier(key, nil)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", a.cfg.ConsoleListen)
	if err != nil {
		return nil, fmt.Errorf("agent: console endpoint: %w", err)
	}
	addr := a.cfg.ConsoleAddr
	if addr == "" {
		addr = advertisedAddr(ln.Addr().(*net.TCPAddr), a.cfg.UnderlayIP)
	}
	a.console = &consoleEndpoint{addr: addr, key: key}
	svc := &consoleService{instDir: a.instDir, keep: a.cfg.ConsoleFiles, poll: consolePoll, typingPoll: consoleTypingPoll, inputTimeout: consoleInputTimeout,
		verify: v, known: a.supervises, log: a.log}
	srv := &http.Server{Handler: svc.handler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("console endpoint stopped", "err", err)
		}
	}()
	a.log.Info("serving consoles", "listen", ln.Addr().String(), "advertised", addr)
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}, nil
}

// supervises reports whether the agent runs a supervisor for instance id.
func (a *hostAgent) supervises(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.insts[id] != nil
}

// loadConsoleKey returns the data directory's console key, making one the
// first time (or replacing a damaged one: the next registration carries it).
func loadConsoleKey(dataDir string) (string, error) {
	p := filepath.Join(dataDir, fileConsoleKey)
	if raw, err := os.ReadFile(p); err == nil && console.ValidKey(string(bytes.TrimSpace(raw))) {
		return string(bytes.TrimSpace(raw)), nil
	}
	key, err := console.NewKey()
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(p, []byte(key+"\n")); err != nil {
		return "", fmt.Errorf("agent: console key: %w", err)
	}
	return key, nil
}

// advertisedAddr is the console address servers are told to dial when
// none is configured: the listening address if it names one, else the
// underlay address, else the machine's first private IPv4 address, else
// its host name, with the listening port.
func advertisedAddr(l *net.TCPAddr, underlay string) string {
	port := strconv.Itoa(l.Port)
	if !l.IP.IsUnspecified() {
		return net.JoinHostPort(l.IP.String(), port)
	}
	if underlay != "" {
		return net.JoinHostPort(underlay, port)
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsPrivate() {
				return net.JoinHostPort(n.IP.String(), port)
			}
		}
	}
	h, _ := os.Hostname()
	return net.JoinHostPort(h, port)
}

// consoleService is the console endpoint's handler state.
type consoleService struct {
	instDir      string
	keep         int
	poll         time.Duration
	typingPoll   time.Duration
	inputTimeout time.Duration
	verify       *console.Verifier
	// known reports whether the agent supervises an instance whose
	// directory may not exist yet (a follow then waits for its log).
	known func(id string) bool
	log   *slog.Logger

	// Input wakes the instance's followers and speeds them up for a
	// while: typed holds when input was last written to each instance,
	// wake a channel closed at the next input.
	mu    sync.Mutex
	typed map[string]time.Time
	wake  map[string]chan struct{}
}

// pace is how a follower of instance id waits between checks: the
// interval and a channel closed at the next input.
func (c *consoleService) pace(id string) (time.Duration, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wake == nil {
		c.wake, c.typed = map[string]chan struct{}{}, map[string]time.Time{}
	}
	ch := c.wake[id]
	if ch == nil {
		ch = make(chan struct{})
		c.wake[id] = ch
	}
	if t, ok := c.typed[id]; ok {
		if time.Since(t) < consoleTyping && c.typingPoll > 0 {
			return c.typingPoll, ch
		}
		delete(c.typed, id)
	}
	return c.poll, ch
}

// noteTyping records input to instance id and wakes its followers.
func (c *consoleService) noteTyping(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wake == nil {
		c.wake, c.typed = map[string]chan struct{}{}, map[string]time.Time{}
	}
	c.typed[id] = time.Now()
	if ch := c.wake[id]; ch != nil {
		close(ch)
		delete(c.wake, id)
	}
}

func (c *consoleService) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/instances/{id}/console", c.output)
	mux.HandleFunc("POST /v1/instances/{id}/console", c.input)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		consoleError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Nothing, not even whether a route exists, before the signature.
		if err := c.verify.Verify(r); err != nil {
			consoleError(w, http.StatusUnauthorized, err.Error())
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func consoleError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: api.Error{Status: status, Message: msg}})
}

// validInstanceID accepts what identity.NewID makes and nothing that could
// leave the instances directory.
func validInstanceID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// instance returns the instance's directory, or writes the error.
func (c *consoleService) instance(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !validInstanceID(id) {
		consoleError(w, http.StatusBadRequest, fmt.Sprintf("malformed instance id %q", id))
		return "", false
	}
	dir := filepath.Join(c.instDir, id)
	if _, err := os.Stat(dir); err != nil && !c.known(id) {
		consoleError(w, http.StatusNotFound, "instance "+id+" has no console on this host")
		return "", false
	}
	return dir, true
}

func (c *consoleService) output(w http.ResponseWriter, r *http.Request) {
	opts, err := console.ParseQuery(r.URL.Query())
	if err != nil {
		consoleError(w, http.StatusBadRequest, err.Error())
		return
	}
	dir, ok := c.instance(w, r)
	if !ok {
		return
	}
	cur, err := openConsoleLog(filepath.Join(dir, fileConsole), c.keep)
	if err != nil {
		consoleError(w, http.StatusInternalServerError, err.Error())
		return
	}
	defer cur.close()
	start, err := opts.Start(cur.size())
	if err != nil {
		consoleError(w, http.StatusRequestedRangeNotSatisfiable, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(console.HeaderOffset, strconv.FormatInt(start, 10))
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	flush := func() { _ = rc.Flush() }
	if err := cur.sendFrom(start, w); err != nil {
		return
	}
	flush()
	if opts.Follow {
		id := r.PathValue("id")
		ended := func() bool {
			_, err := os.Stat(dir)
			return errors.Is(err, os.ErrNotExist) && !c.known(id)
		}
		if err := cur.follow(r.Context(), ended, func() (time.Duration, <-chan struct{}) { return c.pace(id) }, w, flush); err != nil && r.Context().Err() == nil {
			c.log.Debug("console follow ended", "dir", dir, "err", err)
		}
	}
}

func (c *consoleService) input(w http.ResponseWriter, r *http.Request) {
	dir, ok := c.instance(w, r)
	if !ok {
		return
	}
	if r.ContentLength > consoleInputMax {
		// Refused whole rather than typed in part.
		consoleError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("console input exceeds %d bytes per request", consoleInputMax))
		return
	}
	f, err := os.OpenFile(filepath.Join(dir, fileConsoleIn), os.O_WRONLY|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, syscall.ENXIO):
		// A FIFO without a reader: vmm, which holds it open, is gone.
		consoleError(w, http.StatusConflict, "the instance's vmm is not running: console input has no reader")
		return
	case errors.Is(err, os.ErrNotExist):
		consoleError(w, http.StatusConflict, "the instance has not been started on this host: no console input")
		return
	case err != nil:
		consoleError(w, http.StatusInternalServerError, "console input: "+err.Error())
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		consoleError(w, http.StatusInternalServerError, "console input is not a FIFO")
		return
	}
	body := http.MaxBytesReader(w, r.Body, consoleInputMax)
	buf := make([]byte, 4096)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			c.noteTyping(r.PathValue("id"))
			// A deadline per write: a vmm that stopped reading (its guest
			// not draining the UART) must not hold the request forever.
			_ = f.SetWriteDeadline(time.Now().Add(c.inputTimeout))
			if _, err := f.Write(buf[:n]); err != nil {
				switch {
				case errors.Is(err, os.ErrDeadlineExceeded):
					consoleError(w, http.StatusConflict, fmt.Sprintf("console input not read by the vmm within %s", c.inputTimeout))
				case errors.Is(err, syscall.EPIPE):
					consoleError(w, http.StatusConflict, "the instance's vmm exited: console input has no reader")
				default:
					consoleError(w, http.StatusInternalServerError, "console input: "+err.Error())
				}
				return
			}
		}
		if rerr != nil {
			var mbe *http.MaxBytesError
			switch {
			case errors.Is(rerr, io.EOF):
				w.WriteHeader(http.StatusNoContent)
			case errors.As(rerr, &mbe):
				consoleError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("console input exceeds %d bytes per request", mbe.Limit))
			default:
				consoleError(w, http.StatusBadRequest, "console input: "+rerr.Error())
			}
			return
		}
	}
}
