package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/state"
)

// blobGCAge protects freshly uploaded blobs whose image record is not yet
// committed from garbage collection.
const blobGCAge = 10 * time.Minute

// replicateBlobs makes every image's bytes present on this server and
// removes blobs no image references any more.
func (s *Server) replicateBlobs(ctx context.Context) {
	var index uint64
	for ctx.Err() == nil {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		next, _ := s.store.Blocking(wctx, index, func(r *state.ReadTxn) (uint64, error) { return r.Index("images"), nil })
		cancel()
		index = next
		imgs, err := s.store.Read(nil).Images("")
		if err != nil {
			continue
		}
		want := map[string]bool{}
		for _, img := range imgs {
			want[img.SHA256] = true
			if !s.blobs.Has(img.SHA256) {
				if err := s.fetchBlob(ctx, img.SHA256); err != nil {
					s.log.Info("blob not replicated yet", "sha256", img.SHA256, "err", err)
					index = 0 // retry on the next pass
				}
			}
		}
		entries, err := s.blobs.List()
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !want[e.Digest] && time.Since(e.ModTime) > blobGCAge {
				_ = s.blobs.Delete(e.Digest)
			}
		}
		if index == 0 {
			sleep(ctx, 2*time.Second)
		}
	}
}

// fetchBlob copies a blob from the first peer that has it.
func (s *Server) fetchBlob(ctx context.Context, digest string) error {
	s.fetchMu.Lock()
	mu := s.fetches[digest]
	if mu == nil {
		mu = &sync.Mutex{}
		s.fetches[digest] = mu
	}
	s.fetchMu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	if s.blobs.Has(digest) {
		return nil
	}
	tok, err := s.serviceToken()
	if err != nil {
		return err
	}
	servers, err := s.store.Read(nil).Servers()
	if err != nil {
		return err
	}
	var errs []error
	for _, srv := range servers {
		if srv.ID == s.id {
			continue
		}
		if err := s.fetchFrom(ctx, srv.HTTPAddr, digest, tok); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", srv.ID, err))
			continue
		}
		return nil
	}
	if len(errs) == 0 {
		return fmt.Errorf("no peer to fetch blob %s from", digest)
	}
	return errors.Join(errs...)
}

func (s *Server) fetchFrom(ctx context.Context, addr, digest, tok string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/internal/blobs/"+digest, nil)
	if err != nil {
		return err
	}
	req.Header.Set(api.HeaderToken, tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("peer answered %s", resp.Status)
	}
	_, err = s.blobs.Put(resp.Body, digest, s.cfg.MaxImageBytes)
	return err
}
