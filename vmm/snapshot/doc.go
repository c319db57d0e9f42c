// Package snapshot owns the on-disk format of a paused machine: a directory
// holding manifest.json (magic, format version, vmm version, the machine's
// configuration, and the size and checksum of every other file), state.json
// (vCPU, VM and device state) and memory (guest RAM, the regions of
// memory.Plan back to back, zero pages left as holes).
//
// The manifest is written last and atomically, so a directory whose writer
// died half way has no manifest, or a stale one whose checksums fail, and
// is refused. Reading checks the magic and the format version first
// (ErrSnapshotVersion for a format this build does not read), then every
// file's size and checksum and the state's bounds (ErrSnapshotCorrupt).
// Restoring the machine from the decoded state is package vmm's job.
package snapshot
