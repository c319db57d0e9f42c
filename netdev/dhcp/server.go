package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"kvmstack/netdev"
)

// ErrInterfaceGone is returned by Serve when the interface it served was
// deleted: a new server must be started on the new one.
var ErrInterfaceGone = errors.New("dhcp: interface gone")

// Server answers DHCP on one interface of a namespace.
type Server struct {
	ns      *netdev.Namespace
	ifindex int
	pf      *netdev.PacketFile
	resp    atomic.Pointer[responder]
	log     *slog.Logger
	closed  atomic.Bool
	seen    atomic.Int64
	replies atomic.Int64
}

// Listen opens a server for cfg on cfg.Interface inside ns; Serve runs it.
// log (nil discards) gets an Info record per reply and a Debug record per
// ignored frame.
func Listen(ns *netdev.Namespace, cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	link, err := ns.Netlink().LinkByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("dhcp: interface %q: %w", cfg.Interface, err)
	}
	r, err := newResponder(cfg, link.Attrs().HardwareAddr)
	if err != nil {
		return nil, err
	}
	pf, err := openPacketSocket(ns, link.Attrs().Index)
	if err != nil {
		return nil, err
	}
	s := &Server{ns: ns, ifindex: link.Attrs().Index, pf: pf, log: log.With("interface", cfg.Interface)}
	s.resp.Store(r)
	return s, nil
}

// Update replaces the leases and options; the interface must stay the same.
// An invalid cfg is refused and the old one kept.
func (s *Server) Update(cfg Config) error {
	old := s.resp.Load()
	if cfg.Interface != old.cfg.Interface {
		return fmt.Errorf("%w: interface %q, server runs on %q", ErrInvalidConfig, cfg.Interface, old.cfg.Interface)
	}
	mac := old.mac
	// The bridge's address follows its ports unless set: refresh it.
	if link, err := s.ns.Netlink().LinkByIndex(s.ifindex); err == nil && len(link.Attrs().HardwareAddr) == 6 {
		mac = link.Attrs().HardwareAddr
	}
	r, err := newResponder(cfg, mac)
	if err != nil {
		return err
	}
	s.resp.Store(r)
	return nil
}

// Requests is how many frames to the DHCP server port the server has read
// and handled, answered or not.
func (s *Server) Requests() int64 { return s.seen.Load() }

// Replies is how many replies the server has sent.
func (s *Server) Replies() int64 { return s.replies.Load() }

// Serve answers requests until ctx ends or Close (then it returns nil), or
// the interface is deleted (ErrInterfaceGone), or reading fails otherwise.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.pf.SetDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, maxFrameRead)
	for {
		n, err := s.pf.ReadPacket([][]byte{buf}, nil)
		if ctx.Err() != nil || s.closed.Load() {
			return nil
		}
		if errors.Is(err, unix.ENETDOWN) {
			// The kernel reports both "down" and "deleted" this way,
			// once; a down link comes back on the same socket.
			if _, lerr := s.ns.Netlink().LinkByIndex(s.ifindex); lerr != nil {
				return fmt.Errorf("%w: ifindex %d: %w", ErrInterfaceGone, s.ifindex, lerr)
			}
			s.log.Warn("dhcp: interface down")
			continue
		}
		if err != nil {
			return fmt.Errorf("dhcp: %w", err)
		}
		o := s.resp.Load().handle(buf[:n])
		if o.reply == nil {
			s.seen.Add(1)
			s.log.Debug("dhcp: "+o.note, "type", o.msg.String(), "mac", o.client.String(), "ip", o.ip)
			continue
		}
		_, err = s.pf.WritePacket([][]byte{o.reply})
		if err == nil {
			s.replies.Add(1)
		}
		// Counted once handled, so a caller that sees the count also
		// sees any reply it caused.
		s.seen.Add(1)
		if err != nil {
			s.log.Warn("dhcp: send failed", "type", o.msg.String(), "mac", o.client.String(), "err", err)
			continue
		}
		s.log.Info("dhcp: "+o.note, "request", o.msg.String(), "mac", o.client.String(), "ip", o.ip)
	}
}

// Close stops Serve and closes the socket.
func (s *Server) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.pf.SetDeadline(time.Now())
	return s.pf.Close()
}

// Servers runs one Server per interface from a list of configs, for the
// agent's sync loop: Reconcile starts, updates, restarts and stops them.
type Servers struct {
	ns  *netdev.Namespace
	log *slog.Logger
	mu  sync.Mutex
	run map[string]*running
}

type running struct {
	srv  *Server
	stop context.CancelFunc
	done chan error
}

// NewServers returns an empty set of servers in ns (log nil discards).
func NewServers(ns *netdev.Namespace, log *slog.Logger) *Servers {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Servers{ns: ns, log: log, run: map[string]*running{}}
}

// Reconcile makes exactly cfgs served: a server per config's interface,
// with that config. A server whose loop ended (its bridge was recreated,
// say) or whose interface changed ifindex is started afresh. Errors of one
// interface do not stop the others; they are joined.
func (m *Servers) Reconcile(ctx context.Context, cfgs []Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	want := map[string]bool{}
	for _, c := range cfgs {
		if want[c.Interface] {
			errs = append(errs, fmt.Errorf("%w: interface %q configured twice", ErrInvalidConfig, c.Interface))
			continue
		}
		want[c.Interface] = true
	}
	for name, r := range m.run {
		if !want[name] {
			m.stop(name, r)
		}
	}
	for _, c := range cfgs {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if r, ok := m.run[c.Interface]; ok {
			if m.healthy(c.Interface, r) {
				if err := r.srv.Update(c); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			m.stop(c.Interface, r)
		}
		srv, err := Listen(m.ns, c, m.log)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sctx, cancel := context.WithCancel(context.Background())
		r := &running{srv: srv, stop: cancel, done: make(chan error, 1)}
		go func() { r.done <- srv.Serve(sctx) }()
		m.run[c.Interface] = r
		m.log.Info("dhcp: serving", "interface", c.Interface, "leases", len(c.Leases))
	}
	return errors.Join(errs...)
}

// healthy reports whether r still serves the link now called name.
func (m *Servers) healthy(name string, r *running) bool {
	select {
	case err := <-r.done:
		m.log.Warn("dhcp: server ended", "interface", name, "err", err)
		r.done <- err // stop reads it again
		return false
	default:
	}
	l, err := m.ns.Netlink().LinkByName(name)
	return err == nil && l.Attrs().Index == r.srv.ifindex
}

func (m *Servers) stop(name string, r *running) {
	r.stop()
	r.srv.Close()
	<-r.done
	delete(m.run, name)
	m.log.Info("dhcp: stopped", "interface", name)
}

// Close stops every server.
func (m *Servers) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, r := range m.run {
		m.stop(name, r)
	}
	return nil
}
