package api

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
	"sync"
	"time"
)

// DefaultMaxBody bounds a request body. Every body is a small JSON object;
// the bound keeps a client from making vmm buffer without limit.
const DefaultMaxBody = 64 << 10

// Error codes (Error.Code).
const (
	CodeBadRequest       = "bad_request"        // malformed JSON, unknown field, trailing data
	CodeInvalid          = "invalid_argument"   // well-formed but wrong values
	CodeNotFound         = "not_found"          // no such endpoint or device
	CodeMethodNotAllowed = "method_not_allowed" // endpoint exists, method does not
	CodeTooLarge         = "body_too_large"     // body over the limit
	CodeWrongState       = "wrong_state"        // not valid in the current state
	CodeUnsupported      = "unsupported"        // this vmm cannot do it
	CodeInternal         = "internal"           // vmm failed
)

// Options configures a Server.
type Options struct {
	// Launcher builds the machine on InstanceStart and restore; nil
	// refuses both (a vmm that booted from flags).
	Launcher Launcher
	// Log receives one line per failed request; nil discards.
	Log *slog.Logger
	// MaxBody bounds request bodies; 0 means DefaultMaxBody.
	MaxBody int64
}

// Server serves the control API for one vmm.
type Server struct {
	opts    Options
	log     *slog.Logger
	handler http.Handler

	mu       sync.Mutex
	cfg      VMConfig
	touched  bool // a configuration PUT was accepted
	starting bool
	machine  Machine
}

// NewServer returns a server with an empty configuration, waiting for
// PUTs and InstanceStart (or Attach).
func NewServer(opts Options) *Server {
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: log,
		cfg: VMConfig{MachineConfig: DefaultMachineConfig, Drives: []Drive{}, NetworkInterfaces: []NetworkInterface{}}}
	s.handler = s.routes()
	return s
}

// Attach hands the server a machine that is already running, built from
// cfg (vmm booted from its flags).
func (s *Server) Attach(m Machine, cfg VMConfig) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.machine, s.cfg = m, cfg
}

// Handler is the API as an http.Handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve answers requests on l until ctx ends, then shuts down: requests
// in flight get a few seconds to finish. It closes l.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{Handler: s.handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// route is one path's handlers by method.
type route map[string]http.HandlerFunc

// routeTable is every endpoint; docs/openapi-vmm.yaml lists the same
// (TestOpenAPIMatchesRoutes).
func (s *Server) routeTable() map[string]route {
	return map[string]route{
		"/vm":                      {http.MethodGet: s.getVM},
		"/vm/state":                {http.MethodPut: s.putState},
		"/vm/shutdown":             {http.MethodPost: s.postShutdown},
		"/vm/kill":                 {http.MethodPost: s.postKill},
		"/metrics":                 {http.MethodGet: s.getMetrics},
		"/snapshot":                {http.MethodPut: s.putSnapshot},
		"/restore":                 {http.MethodPost: s.postRestore},
		"/boot-source":             {http.MethodPut: s.putBootSource},
		"/machine-config":          {http.MethodPut: s.putMachineConfig},
		"/drives/{id}":             {http.MethodPut: s.putDrive, http.MethodPatch: s.patchDrive},
		"/network-interfaces/{id}": {http.MethodPut: s.putNet, http.MethodPatch: s.patchNet},
		"/rng":                     {http.MethodPut: s.putRNG},
		"/actions":                 {http.MethodPut: s.putActions},
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for path, r := range s.routeTable() {
		mux.Handle(path, r)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, fmt.Sprintf("no endpoint %s", r.URL.Path))
	})
	return s.recoverer(mux)
}

func (rt route) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, ok := rt[r.Method]
	if !ok && r.Method == http.MethodHead {
		h, ok = rt[http.MethodGet]
	}
	if !ok {
		allow := ""
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodPatch} {
			if _, ok := rt[m]; ok {
				allow += ", " + m
			}
		}
		w.Header().Set("Allow", allow[2:])
		writeError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, fmt.Sprintf("%s %s: allowed: %s", r.Method, r.URL.Path, allow[2:]))
		return
	}
	h(w, r)
}

// recoverer turns a handler panic into a 500 instead of a dead vmm: the
// API is reachable by whoever holds the socket, and a bug behind one
// endpoint must not take the guest down with it.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("api handler panicked", "method", r.Method, "path", r.URL.Path, "panic", v)
				writeError(w, http.StatusInternalServerError, CodeInternal, "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// decode reads exactly one JSON object of type T from the body: unknown
// fields, trailing data and oversize bodies are errors. An empty body is
// allowed only when optional is set.
func decode[T any](s *Server, w http.ResponseWriter, r *http.Request, optional bool) (T, bool) {
	var v T
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("body over %d bytes", mbe.Limit))
		} else {
			writeError(w, http.StatusBadRequest, CodeBadRequest, "reading body: "+err.Error())
		}
		return v, false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return v, true
		}
		writeError(w, http.StatusBadRequest, CodeBadRequest, "empty body: want a JSON object")
		return v, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "body: "+err.Error())
		return v, false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "body: data after the JSON object")
		return v, false
	}
	return v, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The client may be gone; there is nobody to tell.
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, Error{Code: code, Message: msg})
}

// writeErr maps a Machine's or Launcher's error to a status and code.
func (s *Server) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusInternalServerError, CodeInternal
	switch {
	case errors.Is(err, ErrWrongState):
		status, code = http.StatusConflict, CodeWrongState
	case errors.Is(err, ErrInvalid):
		status, code = http.StatusBadRequest, CodeInvalid
	case errors.Is(err, ErrNotFound):
		status, code = http.StatusNotFound, CodeNotFound
	case errors.Is(err, ErrUnsupported):
		status, code = http.StatusNotImplemented, CodeUnsupported
	}
	s.log.Warn("api request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	writeError(w, status, code, err.Error())
}

func noContent(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }

// running returns the machine, or answers 409 when there is none yet.
func (s *Server) running(w http.ResponseWriter) Machine {
	s.mu.Lock()
	m := s.machine
	s.mu.Unlock()
	if m == nil {
		writeError(w, http.StatusConflict, CodeWrongState, "the vm is not started (PUT /actions InstanceStart first)")
	}
	return m
}
