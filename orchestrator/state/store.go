package state

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

const tableIndex = "index"

// indexEntry records the Raft index at which a table last changed; blocking
// queries compare against it.
type indexEntry struct {
	Table string
	Index uint64
}

// tableSchemas is filled by the per-resource files so each file owns its table.
var tableSchemas = map[string]*memdb.TableSchema{
	tableIndex: {
		Name: tableIndex,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Table"}},
		},
	},
}

func schema() *memdb.DBSchema {
	s := &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{}}
	for name, t := range tableSchemas {
		s.Tables[name] = t
	}
	return s
}

// Store is the in-memory indexed state. Reads use memdb snapshots and never
// block writers; Restore swaps the whole database and wakes every waiter.
type Store struct {
	mu      sync.RWMutex
	db      *memdb.MemDB
	abandon chan struct{}
}

// New returns an empty store.
func New() *Store {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		// The schema is static; failing here is a programming error.
		panic(fmt.Sprintf("state: invalid schema: %v", err))
	}
	return &Store{db: db, abandon: make(chan struct{})}
}

func (s *Store) current() (*memdb.MemDB, chan struct{}) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db, s.abandon
}

// ReadTxn is a consistent read-only view of the state.
type ReadTxn struct {
	tx *memdb.Txn
	ws memdb.WatchSet
}

// Read returns a snapshot view. ws may be nil; when set, every read adds its
// watch channels so a blocking query can wait for a change.
func (s *Store) Read(ws memdb.WatchSet) *ReadTxn {
	db, ab := s.current()
	if ws != nil {
		ws.Add(ab)
	}
	return &ReadTxn{tx: db.Txn(false), ws: ws}
}

// Index returns the Raft index of the last change to any of the given tables
// (or to any table if none is given).
func (r *ReadTxn) Index(tables ...string) uint64 {
	var max uint64
	if len(tables) == 0 {
		it, err := r.tx.Get(tableIndex, "id")
		if err != nil {
			return 0
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			if e := raw.(*indexEntry); e.Index > max {
				max = e.Index
			}
		}
		return max
	}
	for _, t := range tables {
		ch, raw, err := r.tx.FirstWatch(tableIndex, "id", t)
		if err != nil {
			continue
		}
		if r.ws != nil {
			r.ws.Add(ch)
		}
		if raw != nil && raw.(*indexEntry).Index > max {
			max = raw.(*indexEntry).Index
		}
	}
	return max
}

func first[T any](r *memdb.Txn, ws memdb.WatchSet, table, index string, args ...any) (*T, error) {
	ch, raw, err := r.FirstWatch(table, index, args...)
	if err != nil {
		return nil, fmt.Errorf("state: %s by %s: %w", table, index, err)
	}
	if ws != nil {
		ws.Add(ch)
	}
	if raw == nil {
		return nil, nil
	}
	return raw.(*T), nil
}

func all[T any](r *memdb.Txn, ws memdb.WatchSet, table, index string, args ...any) ([]*T, error) {
	it, err := r.Get(table, index, args...)
	if err != nil {
		return nil, fmt.Errorf("state: list %s by %s: %w", table, index, err)
	}
	if ws != nil {
		ws.Add(it.WatchCh())
	}
	var out []*T
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*T))
	}
	return out, nil
}

// WriteTxn is one atomic mutation at a Raft index. Every method validates its
// input against the current state before changing anything.
type WriteTxn struct {
	tx      *memdb.Txn
	index   uint64
	touched map[string]bool
}

// Write runs fn in a write transaction at the given Raft index and commits it
// only if fn returns nil, so a rejected command leaves no trace.
func (s *Store) Write(index uint64, fn func(*WriteTxn) error) error {
	db, _ := s.current()
	w := &WriteTxn{tx: db.Txn(true), index: index, touched: map[string]bool{}}
	if err := fn(w); err != nil {
		w.tx.Abort()
		return err
	}
	for t := range w.touched {
		if err := w.tx.Insert(tableIndex, &indexEntry{Table: t, Index: index}); err != nil {
			w.tx.Abort()
			return fmt.Errorf("state: bump index of %s: %w", t, err)
		}
	}
	w.tx.Commit()
	return nil
}

// Index returns the Raft index this transaction commits at.
func (w *WriteTxn) Index() uint64 { return w.index }

func (w *WriteTxn) insert(table string, obj any) error {
	if err := w.tx.Insert(table, obj); err != nil {
		return fmt.Errorf("state: insert into %s: %w", table, err)
	}
	w.touched[table] = true
	return nil
}

func (w *WriteTxn) delete(table string, obj any) error {
	if err := w.tx.Delete(table, obj); err != nil {
		return fmt.Errorf("state: delete from %s: %w", table, err)
	}
	w.touched[table] = true
	return nil
}

// read exposes the write transaction's own view, so validation sees earlier
// changes made in the same command (batch placements depend on this).
func (w *WriteTxn) read() *ReadTxn { return &ReadTxn{tx: w.tx} }

// Blocking runs query until the index it reports exceeds minIndex or ctx is
// done, re-running it whenever something it read changes.
func (s *Store) Blocking(ctx context.Context, minIndex uint64, query func(*ReadTxn) (uint64, error)) (uint64, error) {
	for {
		ws := memdb.NewWatchSet()
		idx, err := query(s.Read(ws))
		if err != nil || idx > minIndex || minIndex == 0 {
			return idx, err
		}
		if ctx.Err() != nil {
			return idx, nil
		}
		if err := ws.WatchCtx(ctx); err != nil {
			// Deadline reached: the caller returns the current (unchanged) result.
			return query(s.Read(nil))
		}
	}
}

// snapshotRecord is one line of the snapshot stream.
type snapshotRecord struct {
	Table string          `json:"t"`
	Obj   json.RawMessage `json:"o"`
}

// newObject returns a pointer to a zero object of the table's type.
var newObject = map[string]func() any{
	tableIndex: func() any { return &indexEntry{} },
}

// View is a frozen point-in-time copy of the state that can be serialised
// later while writes continue.
type View struct{ tx *memdb.Txn }

// View captures the current state. Raft calls Snapshot on the apply goroutine
// and persists in the background, so the capture must happen here, not later.
func (s *Store) View() *View {
	db, _ := s.current()
	return &View{tx: db.Txn(false)}
}

// WriteSnapshot streams the current state; see View.Encode.
func (s *Store) WriteSnapshot(w io.Writer) error { return s.View().Encode(w) }

// Encode streams every object of every table as JSON lines.
func (v *View) Encode(w io.Writer) error {
	tx := v.tx
	enc := json.NewEncoder(w)
	tables := make([]string, 0, len(tableSchemas))
	for t := range tableSchemas {
		tables = append(tables, t)
	}
	sort.Strings(tables)
	for _, t := range tables {
		it, err := tx.Get(t, "id")
		if err != nil {
			return fmt.Errorf("state: snapshot %s: %w", t, err)
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			b, err := json.Marshal(raw)
			if err != nil {
				return fmt.Errorf("state: snapshot %s: %w", t, err)
			}
			if err := enc.Encode(snapshotRecord{Table: t, Obj: b}); err != nil {
				return fmt.Errorf("state: write snapshot: %w", err)
			}
		}
	}
	return nil
}

// Restore replaces the whole state with the snapshot read from r. Blocking
// queries on the old state are woken so they re-run against the new one.
func (s *Store) Restore(r io.Reader) error {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		return fmt.Errorf("state: restore: %w", err)
	}
	tx := db.Txn(true)
	dec := json.NewDecoder(r)
	for {
		var rec snapshotRecord
		if err := dec.Decode(&rec); err == io.EOF {
			break
		} else if err != nil {
			tx.Abort()
			return fmt.Errorf("state: restore decode: %w", err)
		}
		mk, ok := newObject[rec.Table]
		if !ok {
			tx.Abort()
			return fmt.Errorf("state: restore: unknown table %q: %w", rec.Table, ErrInvalid)
		}
		obj := mk()
		if err := json.Unmarshal(rec.Obj, obj); err != nil {
			tx.Abort()
			return fmt.Errorf("state: restore %s: %w", rec.Table, err)
		}
		if err := tx.Insert(rec.Table, obj); err != nil {
			tx.Abort()
			return fmt.Errorf("state: restore insert %s: %w", rec.Table, err)
		}
	}
	tx.Commit()
	s.mu.Lock()
	old := s.abandon
	s.db = db
	s.abandon = make(chan struct{})
	s.mu.Unlock()
	close(old)
	return nil
}

// register adds a table, its snapshot constructor, to the schema.
func register(t *memdb.TableSchema, mk func() any) {
	tableSchemas[t.Name] = t
	newObject[t.Name] = mk
}

func idIndex(field string) *memdb.IndexSchema {
	return &memdb.IndexSchema{Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: field}}
}

func strIndex(name, field string, unique bool) *memdb.IndexSchema {
	return &memdb.IndexSchema{Name: name, Unique: unique, AllowMissing: !unique, Indexer: &memdb.StringFieldIndex{Field: field}}
}

// fixedTime strips the monotonic clock so times survive JSON round trips
// unchanged (snapshots must restore byte-identical objects).
func fixedTime(t time.Time) time.Time { return t.Round(0).UTC() }
