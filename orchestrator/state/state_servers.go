package state

import (
	"fmt"

	memdb "github.com/hashicorp/go-memdb"
)

const tableServers = "servers"

// Server maps a Raft server id to the HTTP address followers forward writes to
// and peers fetch blobs from.
type Server struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
}

func init() {
	register(&memdb.TableSchema{Name: tableServers, Indexes: map[string]*memdb.IndexSchema{"id": idIndex("ID")}},
		func() any { return &Server{} })
}

// UpsertServer records or updates a server's addresses.
func (w *WriteTxn) UpsertServer(s *Server) error {
	if s.ID == "" || s.RaftAddr == "" || s.HTTPAddr == "" || len(s.ID) > 128 {
		return fmt.Errorf("server needs an id, a raft and an http address: %w", ErrInvalid)
	}
	c := *s
	return w.insert(tableServers, &c)
}

// DeleteServer forgets a server.
func (w *WriteTxn) DeleteServer(id string) error {
	s, err := first[Server](w.tx, nil, tableServers, "id", id)
	if err != nil {
		return err
	}
	if s == nil {
		return fmt.Errorf("server %s: %w", id, ErrNotFound)
	}
	return w.delete(tableServers, s)
}

// Server returns a server by id.
func (r *ReadTxn) Server(id string) (*Server, error) {
	return first[Server](r.tx, r.ws, tableServers, "id", id)
}

// Servers lists all known servers.
func (r *ReadTxn) Servers() ([]*Server, error) { return all[Server](r.tx, r.ws, tableServers, "id") }
