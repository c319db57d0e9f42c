package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"kvmstack/orchestrator/blob"
	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/identity"
	"kvmstack/orchestrator/metrics"
	"kvmstack/orchestrator/raftnode"
	"kvmstack/orchestrator/scheduler"
	"kvmstack/orchestrator/state"
)

// Headers used between clients and servers.
const (
	// HeaderIndex carries the Raft index a response reflects (reads) or
	// committed at (writes); pass it as ?index= to wait for that state.
	HeaderIndex = "X-Kvmstack-Index"
	// HeaderForwarded marks a request a follower proxied to the leader, so
	// it is never forwarded twice.
	HeaderForwarded = "X-Kvmstack-Forwarded"
	// HeaderToken carries the bearer token (Authorization: Bearer also works).
	HeaderToken = "X-Auth-Token"
)

// Config holds the API's limits and identity settings.
type Config struct {
	// MaxBodyBytes bounds JSON request bodies.
	MaxBodyBytes int64
	// MaxImageBytes bounds image uploads.
	MaxImageBytes int64
	// TokenTTL is the lifetime of issued tokens.
	TokenTTL time.Duration
	// BcryptCost is the password hashing cost (0 = library default).
	BcryptCost int
	// HostTTL is how long a host counts as up after a heartbeat.
	HostTTL time.Duration
	// Strategy is the scheduler weigher evacuations place with.
	Strategy scheduler.Strategy
	// MaxWait bounds a blocking query's wait.
	MaxWait time.Duration
}

// Server serves the API of one cluster server.
type Server struct {
	Config  Config
	Store   *state.Store
	Node    *raftnode.Node
	Blobs   *blob.Store
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// SelfHTTP is this server's advertised HTTP address.
	SelfHTTP string
	// FetchBlob retrieves a missing blob from a peer into the local store.
	FetchBlob func(ctx context.Context, digest string) error
	// Now is the clock.
	Now func() time.Time

	mux *http.ServeMux
}

// handlerFunc is an authenticated route handler; returning an error writes
// the JSON error response.
type handlerFunc func(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error

// routeOpts say how a route is forwarded.
type routeOpts int

const (
	// local routes are always answered by the receiving server.
	local routeOpts = 1 << iota
	// leaderOnly routes are forwarded to the leader whatever the method.
	leaderOnly
	// upload routes stream a large raw body (bounded by MaxImageBytes).
	upload
)

// Handler builds the HTTP handler.
func (s *Server) Handler() http.Handler {
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.Config.MaxBodyBytes == 0 {
		s.Config.MaxBodyBytes = 1 << 20
	}
	if s.Config.MaxImageBytes == 0 {
		s.Config.MaxImageBytes = 8 << 30
	}
	if s.Config.TokenTTL == 0 {
		s.Config.TokenTTL = identity.DefaultTokenTTL
	}
	if s.Config.MaxWait == 0 {
		s.Config.MaxWait = 5 * time.Minute
	}
	s.mux = http.NewServeMux()
	s.routes()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &Error{Status: http.StatusNotFound, Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	return s.mux
}

func (s *Server) handle(pattern string, action identity.Action, opts routeOpts, h handlerFunc) {
	method, path, _ := strings.Cut(pattern, " ")
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		defer func() {
			if s.Metrics != nil {
				s.Metrics.APIRequests.WithLabelValues(path, method, strconv.Itoa(rec.status)).Inc()
				s.Metrics.APILatency.WithLabelValues(path).Observe(time.Since(start).Seconds())
			}
		}()
		if s.forward(rec, r, opts) {
			return
		}
		var sub *identity.Subject
		if rule := identity.Policy[action]; rule.Scope != identity.Public {
			var err error
			if sub, err = s.authenticate(r); err != nil {
				writeError(rec, err)
				return
			}
		}
		if err := identity.Authorize(action, sub, ""); err != nil {
			writeError(rec, err)
			return
		}
		limit := s.Config.MaxBodyBytes
		if opts&upload != 0 {
			limit = s.Config.MaxImageBytes
		}
		if r.ContentLength > limit {
			writeError(rec, &Error{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("request body exceeds %d bytes", limit)})
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(rec, r.Body, limit)
		}
		if err := h(rec, r, sub); err != nil {
			writeError(rec, err)
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// forward proxies the request to the leader when this server must not
// answer it itself. It reports whether the request was handled.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, opts routeOpts) bool {
	if opts&local != 0 || s.Node.IsLeader() {
		return false
	}
	q := r.URL.Query()
	write := r.Method != http.MethodGet && r.Method != http.MethodHead
	if !write && opts&leaderOnly == 0 && q.Has("stale") {
		return false
	}
	if r.Header.Get(HeaderForwarded) != "" {
		writeError(w, &Error{Status: http.StatusServiceUnavailable, Code: CodeNoLeader, Message: "request was forwarded to a server that is not the leader"})
		return true
	}
	target := s.leaderHTTP()
	if target == "" {
		writeError(w, &Error{Status: http.StatusServiceUnavailable, Code: CodeNoLeader, Message: "no raft leader is known; retry"})
		return true
	}
	u := &url.URL{Scheme: "http", Host: target}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = target
			pr.Out.Header.Set(HeaderForwarded, s.SelfHTTP)
		},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			if errors.Is(err, syscall.ECONNREFUSED) {
				// The request never reached the leader: safe to retry.
				writeError(w, &Error{Status: http.StatusServiceUnavailable, Code: CodeNoLeader, Message: "leader unreachable: " + err.Error()})
				return
			}
			// The leader may or may not have applied the request: report an
			// ambiguous failure, not a retryable "no leader".
			writeError(w, &Error{Status: http.StatusBadGateway, Code: CodeUnknownOutcome, Message: "forwarding to leader failed: " + err.Error()})
		},
	}
	proxy.ServeHTTP(w, r)
	return true
}

func (s *Server) leaderHTTP() string {
	_, id := s.Node.Leader()
	if id == "" {
		return ""
	}
	srv, err := s.Store.Read(nil).Server(id)
	if err != nil || srv == nil {
		return ""
	}
	return srv.HTTPAddr
}

// apply proposes a command and translates the FSM's rejection into an error.
func (s *Server) apply(r *http.Request, w http.ResponseWriter, c fsm.Command) (*fsm.Result, error) {
	res, idx, err := s.Node.Apply(r.Context(), c)
	if err != nil {
		return nil, err
	}
	w.Header().Set(HeaderIndex, strconv.FormatUint(idx, 10))
	if res.Err != nil {
		return nil, res.Err
	}
	return res, nil
}

// read runs a possibly blocking read: ?index=N&wait=D waits until the
// reported index exceeds N; ?consistent first runs a Raft barrier.
func (s *Server) read(w http.ResponseWriter, r *http.Request, q func(*state.ReadTxn) (uint64, any, error)) error {
	v := r.URL.Query()
	if v.Has("consistent") {
		if err := s.Node.Barrier(r.Context()); err != nil {
			return err
		}
	}
	var min uint64
	if x := v.Get("index"); x != "" {
		n, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return &Error{Status: http.StatusBadRequest, Message: "index must be an unsigned integer"}
		}
		min = n
	}
	wait := 30 * time.Second
	if x := v.Get("wait"); x != "" {
		d, err := time.ParseDuration(x)
		if err != nil || d < 0 {
			return &Error{Status: http.StatusBadRequest, Message: "wait must be a duration such as 30s"}
		}
		wait = d
	}
	if wait > s.Config.MaxWait {
		wait = s.Config.MaxWait
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	var out any
	idx, err := s.Store.Blocking(ctx, min, func(t *state.ReadTxn) (uint64, error) {
		i, o, err := q(t)
		out = o
		// Never report 0: a client passing it back must block, not spin.
		return max(i, 1), err
	})
	if err != nil {
		return err
	}
	w.Header().Set(HeaderIndex, strconv.FormatUint(idx, 10))
	return writeJSON(w, http.StatusOK, out)
}

// decode reads a JSON body strictly.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &Error{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("request body exceeds %d bytes", mbe.Limit)}
		}
		return &Error{Status: http.StatusBadRequest, Message: "malformed JSON body: " + err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &Error{Status: http.StatusBadRequest, Message: "malformed JSON body: trailing data"}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// Error codes clients branch on.
const (
	// CodeNoLeader: nothing was applied; the request may be retried.
	CodeNoLeader = "no_leader"
	// CodeUnknownOutcome: the write may or may not have been applied.
	CodeUnknownOutcome = "unknown_outcome"
)

// Error is an API error with its HTTP status.
type Error struct {
	Status  int    `json:"status"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// ErrorBody is the JSON shape of every error response.
type ErrorBody struct {
	Error Error `json:"error"`
}

func writeError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: statusOf(err), Message: err.Error()}
		switch {
		case errors.Is(err, raftnode.ErrNotLeader):
			e.Code = CodeNoLeader
		case errors.Is(err, raftnode.ErrUnknownOutcome):
			e.Code = CodeUnknownOutcome
		}
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kvmstack"`)
	}
	_ = writeJSON(w, e.Status, ErrorBody{Error: *e})
}

func statusOf(err error) int {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe), errors.Is(err, blob.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, identity.ErrTokenMalformed), errors.Is(err, identity.ErrTokenSignature),
		errors.Is(err, identity.ErrTokenExpired), errors.Is(err, identity.ErrTokenRevoked), errors.Is(err, identity.ErrBadCredentials):
		return http.StatusUnauthorized
	case errors.Is(err, identity.ErrForbidden), errors.Is(err, state.ErrQuota):
		return http.StatusForbidden
	case errors.Is(err, state.ErrNotFound), errors.Is(err, blob.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, state.ErrConflict), errors.Is(err, state.ErrNoCapacity), errors.Is(err, state.ErrExhausted):
		return http.StatusConflict
	case errors.Is(err, state.ErrInvalid), errors.Is(err, blob.ErrDigestMismatch), errors.Is(err, blob.ErrBadDigest), errors.Is(err, fsm.ErrDecode):
		return http.StatusBadRequest
	case errors.Is(err, raftnode.ErrNotLeader), errors.Is(err, raftnode.ErrUnknownOutcome):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func notFound(kind, id string) error {
	return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("%s %s not found", kind, id)}
}

func badRequest(format string, args ...any) error {
	return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...)}
}
