package api

import (
	"errors"
	"net/http"

	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/identity"
	"kvmstack/orchestrator/state"
)

// uploadImage stores the streamed body under its declared sha256 and then
// records the image through Raft. Query parameters: name, kind, sha256,
// visibility (private by default; public needs a system admin).
func (s *Server) uploadImage(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	q := r.URL.Query()
	img := state.Image{ID: identity.NewID(), ProjectID: sub.Claims.ProjectID, Name: q.Get("name"), Kind: q.Get("kind"),
		SHA256: q.Get("sha256"), Visibility: q.Get("visibility"), CreatedAt: s.Now()}
	if img.Visibility == "" {
		img.Visibility = state.VisibilityPrivate
	}
	if img.Visibility == state.VisibilityPublic {
		if err := identity.Authorize("image:create:public", sub, ""); err != nil {
			return err
		}
	}
	if !state.ValidSHA256(img.SHA256) {
		return badRequest("sha256 must be the 64 lowercase hex digits of the content")
	}
	had := s.Blobs.Has(img.SHA256)
	n, err := s.Blobs.Put(r.Body, img.SHA256, s.Config.MaxImageBytes)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &Error{Status: http.StatusRequestEntityTooLarge, Message: "image exceeds the size limit"}
		}
		return err
	}
	img.Size = n
	if _, err := s.apply(r, w, &fsm.ImageCreate{Header: s.hdr(), Image: img}); err != nil {
		if !had {
			if other, _ := s.Store.Read(nil).ImageBySHA(img.SHA256); other == nil {
				_ = s.Blobs.Delete(img.SHA256)
			}
		}
		return err
	}
	got, _ := s.Store.Read(nil).Image(img.ID)
	return writeJSON(w, http.StatusCreated, got)
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		imgs, err := t.Images(scopeProject(r, sub))
		return t.Index("images"), nonNil(imgs), err
	})
}

func (s *Server) visibleImage(t *state.ReadTxn, id string, sub *identity.Subject) (*state.Image, error) {
	img, err := t.Image(id)
	if err != nil {
		return nil, err
	}
	if img == nil || (!img.VisibleTo(sub.Claims.ProjectID) && !sub.SystemAdmin()) {
		return nil, notFound("image", id)
	}
	return img, nil
}

func (s *Server) showImage(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		img, err := s.visibleImage(t, r.PathValue("id"), sub)
		return t.Index("images"), img, err
	})
}

func (s *Server) deleteImage(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	img, err := s.visibleImage(s.Store.Read(nil), r.PathValue("id"), sub)
	if err != nil {
		return err
	}
	if err := projectAccess("image:delete", sub, img.ProjectID); err != nil {
		return err
	}
	if _, err := s.apply(r, w, &fsm.ImageDelete{Header: s.hdr(), ID: img.ID}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// downloadImage serves the bytes from the local blob store, fetching them
// from a peer first if this server does not have them yet.
func (s *Server) downloadImage(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	img, err := s.visibleImage(s.Store.Read(nil), r.PathValue("id"), sub)
	if err != nil {
		return err
	}
	if !s.Blobs.Has(img.SHA256) && s.FetchBlob != nil {
		if err := s.FetchBlob(r.Context(), img.SHA256); err != nil {
			return &Error{Status: http.StatusServiceUnavailable, Message: "image bytes not available on any server yet: " + err.Error()}
		}
	}
	return s.serveBlob(w, r, img.SHA256)
}

func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, digest string) error {
	f, err := s.Blobs.Open(digest)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Image-Sha256", digest)
	http.ServeContent(w, r, "", st.ModTime(), f)
	return nil
}

func (s *Server) internalBlob(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	d := r.PathValue("sha256")
	if !s.Blobs.Has(d) {
		return &Error{Status: http.StatusNotFound, Message: "blob not stored here"}
	}
	return s.serveBlob(w, r, d)
}
