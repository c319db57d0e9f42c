// Package fsm owns the replicated command format (one type byte followed by a
// JSON body) and the Raft state machine that decodes committed commands and
// applies them to the state store. Every command is validated again here,
// against the state at its log position, so a stale, replayed or forged
// proposal is rejected instead of applied.
package fsm
