// Package blob owns the content-addressed byte store on each server's disk:
// image bytes are kept under their sha256, written through a temporary file
// and verified before they become visible, so a wrong or truncated upload
// leaves nothing behind.
package blob
