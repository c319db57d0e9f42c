package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"kvmstack/orchestrator/state"
)

// Type is the first byte of an encoded command.
type Type byte

// Command types. Values are part of the on-disk log format: never renumber.
const (
	TypeBootstrap Type = iota + 1
	TypeProjectCreate
	TypeProjectDelete
	TypeUserCreate
	TypeUserDelete
	TypeRoleAssign
	TypeRoleUnassign
	TypeKeyRotate
	TypeTokenRevoke
	TypeImageCreate
	TypeImageDelete
	TypeFlavorCreate
	TypeFlavorDelete
	TypeQuotaSet
	TypeGroupCreate
	TypeGroupDelete
	TypeHostRegister
	TypeHostHeartbeat
	TypeHostEnable
	TypeHostDelete
	TypeInstanceCreate
	TypeInstancePlace
	TypeInstanceState
	TypeServerUpsert
	TypeServerDelete
	TypeNetworkCreate
	TypeNetworkDelete
	TypeInstanceAction
	TypeHostDown
	TypeInstanceEvacuate
	typeEnd
)

// MaxCommandSize bounds an encoded command; larger ones are refused before
// decoding.
const MaxCommandSize = 4 << 20

// ErrDecode means the bytes are not a valid command.
var ErrDecode = errors.New("fsm: malformed command")

// Command is anything that can be replicated.
type Command interface {
	// Type returns the command's type byte.
	Type() Type
	// Time returns when the proposer issued it; the FSM uses it as "now" so
	// that replay is deterministic.
	Time() time.Time
}

// Header carries the proposer's clock.
type Header struct {
	At time.Time `json:"at"`
}

// Time returns the proposal time.
func (h Header) Time() time.Time { return h.At }

// Bootstrap creates the admin project, user and first signing key.
type Bootstrap struct {
	Header
	Project state.Project    `json:"project"`
	User    state.User       `json:"user"`
	Key     state.SigningKey `json:"key"`
}

// ProjectCreate adds a project.
type ProjectCreate struct {
	Header
	Project state.Project `json:"project"`
}

// ProjectDelete removes a project.
type ProjectDelete struct {
	Header
	ID string `json:"id"`
}

// UserCreate adds a user (password already hashed by the proposer).
type UserCreate struct {
	Header
	User state.User `json:"user"`
}

// UserDelete removes a user.
type UserDelete struct {
	Header
	ID string `json:"id"`
}

// RoleAssign grants a role.
type RoleAssign struct {
	Header
	Assignment state.RoleAssignment `json:"assignment"`
}

// RoleUnassign removes a role.
type RoleUnassign struct {
	Header
	UserID    string `json:"user_id"`
	ProjectID string `json:"project_id"`
}

// KeyRotate adds a signing key and retires old ones.
type KeyRotate struct {
	Header
	Key          state.SigningKey `json:"key"`
	RetireBefore time.Time        `json:"retire_before"`
}

// TokenRevoke revokes one token.
type TokenRevoke struct {
	Header
	Token state.RevokedToken `json:"token"`
}

// ImageCreate records an uploaded image.
type ImageCreate struct {
	Header
	Image state.Image `json:"image"`
}

// ImageDelete removes an image.
type ImageDelete struct {
	Header
	ID string `json:"id"`
}

// FlavorCreate adds a flavor.
type FlavorCreate struct {
	Header
	Flavor state.Flavor `json:"flavor"`
}

// FlavorDelete removes a flavor.
type FlavorDelete struct {
	Header
	ID string `json:"id"`
}

// QuotaSet sets a project quota.
type QuotaSet struct {
	Header
	Quota state.Quota `json:"quota"`
}

// GroupCreate adds a server group.
type GroupCreate struct {
	Header
	Group state.ServerGroup `json:"group"`
}

// GroupDelete removes a server group.
type GroupDelete struct {
	Header
	ID string `json:"id"`
}

// HostRegister registers or re-registers a host.
type HostRegister struct {
	Header
	Host state.Host `json:"host"`
}

// HostHeartbeat marks a host alive.
type HostHeartbeat struct {
	Header
	ID string `json:"id"`
}

// HostEnable enables or disables a host.
type HostEnable struct {
	Header
	ID      string `json:"id"`
	Enabled bool   `json:"enabled"`
}

// HostDelete removes a host.
type HostDelete struct {
	Header
	ID string `json:"id"`
}

// InstanceCreate adds pending instances and, in the same transaction, their
// ports (the FSM allocates each port's MAC and address).
type InstanceCreate struct {
	Header
	Instances []*state.Instance `json:"instances"`
	Ports     []*state.Port     `json:"ports,omitempty"`
}

// InstancePlace commits a batch of scheduler decisions.
type InstancePlace struct {
	Header
	Rules      state.PlacementRules `json:"rules"`
	Placements []state.Placement    `json:"placements"`
}

// InstanceState changes an instance's state (including deletion).
type InstanceState struct {
	Header
	ID     string `json:"id"`
	State  string `json:"state"`
	Reason string `json:"reason"`
}

// InstanceAction records a user's power action (stop, start, reboot, pause,
// resume) for the instance's agent to carry out.
type InstanceAction struct {
	Header
	ID     string `json:"id"`
	Action string `json:"action"`
}

// HostDown marks a host that stopped heartbeating down and its instances
// host-down. The leader's failure detector proposes it with its clock in
// the header; the FSM re-checks the heartbeat against that time and TTL.
type HostDown struct {
	Header
	ID  string        `json:"id"`
	TTL time.Duration `json:"ttl"`
}

// InstanceEvacuate moves host-down instances to other hosts, all of them
// or none.
type InstanceEvacuate struct {
	Header
	Rules      state.PlacementRules `json:"rules"`
	Placements []state.Placement    `json:"placements"`
}

// ServerUpsert records a server's addresses.
type ServerUpsert struct {
	Header
	Server state.Server `json:"server"`
}

// ServerDelete forgets a server.
type ServerDelete struct {
	Header
	ID string `json:"id"`
}

// Type implementations.
func (Bootstrap) Type() Type        { return TypeBootstrap }
func (ProjectCreate) Type() Type    { return TypeProjectCreate }
func (ProjectDelete) Type() Type    { return TypeProjectDelete }
func (UserCreate) Type() Type       { return TypeUserCreate }
func (UserDelete) Type() Type       { return TypeUserDelete }
func (RoleAssign) Type() Type       { return TypeRoleAssign }
func (RoleUnassign) Type() Type     { return TypeRoleUnassign }
func (KeyRotate) Type() Type        { return TypeKeyRotate }
func (TokenRevoke) Type() Type      { return TypeTokenRevoke }
func (ImageCreate) Type() Type      { return TypeImageCreate }
func (ImageDelete) Type() Type      { return TypeImageDelete }
func (FlavorCreate) Type() Type     { return TypeFlavorCreate }
func (FlavorDelete) Type() Type     { return TypeFlavorDelete }
func (QuotaSet) Type() Type         { return TypeQuotaSet }
func (GroupCreate) Type() Type      { return TypeGroupCreate }
func (GroupDelete) Type() Type      { return TypeGroupDelete }
func (HostRegister) Type() Type     { return TypeHostRegister }
func (HostHeartbeat) Type() Type    { return TypeHostHeartbeat }
func (HostEnable) Type() Type       { return TypeHostEnable }
func (HostDelete) Type() Type       { return TypeHostDelete }
func (InstanceCreate) Type() Type   { return TypeInstanceCreate }
func (InstancePlace) Type() Type    { return TypeInstancePlace }
func (InstanceState) Type() Type    { return TypeInstanceState }
func (InstanceAction) Type() Type   { return TypeInstanceAction }
func (HostDown) Type() Type         { return TypeHostDown }
func (InstanceEvacuate) Type() Type { return TypeInstanceEvacuate }
func (ServerUpsert) Type() Type     { return TypeServerUpsert }
func (ServerDelete) Type() Type     { return TypeServerDelete }

func newCommand(t Type) Command {
	switch t {
	case TypeBootstrap:
		return &Bootstrap{}
	case TypeProjectCreate:
		return &ProjectCreate{}
	case TypeProjectDelete:
		return &ProjectDelete{}
	case TypeUserCreate:
		return &UserCreate{}
	case TypeUserDelete:
		return &UserDelete{}
	case TypeRoleAssign:
		return &RoleAssign{}
	case TypeRoleUnassign:
		return &RoleUnassign{}
	case TypeKeyRotate:
		return &KeyRotate{}
	case TypeTokenRevoke:
		return &TokenRevoke{}
	case TypeImageCreate:
		return &ImageCreate{}
	case TypeImageDelete:
		return &ImageDelete{}
	case TypeFlavorCreate:
		return &FlavorCreate{}
	case TypeFlavorDelete:
		return &FlavorDelete{}
	case TypeQuotaSet:
		return &QuotaSet{}
	case TypeGroupCreate:
		return &GroupCreate{}
	case TypeGroupDelete:
		return &GroupDelete{}
	case TypeHostRegister:
		return &HostRegister{}
	case TypeHostHeartbeat:
		return &HostHeartbeat{}
	case TypeHostEnable:
		return &HostEnable{}
	case TypeHostDelete:
		return &HostDelete{}
	case TypeInstanceCreate:
		return &InstanceCreate{}
	case TypeInstancePlace:
		return &InstancePlace{}
	case TypeInstanceState:
		return &InstanceState{}
	case TypeServerUpsert:
		return &ServerUpsert{}
	case TypeServerDelete:
		return &ServerDelete{}
	case TypeNetworkCreate:
		return &NetworkCreate{}
	case TypeNetworkDelete:
		return &NetworkDelete{}
	case TypeInstanceAction:
		return &InstanceAction{}
	case TypeHostDown:
		return &HostDown{}
	case TypeInstanceEvacuate:
		return &InstanceEvacuate{}
	}
	return nil
}

// Encode serialises a command as its type byte followed by JSON.
func Encode(c Command) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(byte(c.Type()))
	if err := json.NewEncoder(&buf).Encode(c); err != nil {
		return nil, fmt.Errorf("fsm: encode %T: %w", c, err)
	}
	if buf.Len() > MaxCommandSize {
		return nil, fmt.Errorf("fsm: %T encodes to %d bytes (max %d): %w", c, buf.Len(), MaxCommandSize, ErrDecode)
	}
	return buf.Bytes(), nil
}

// Decode parses an encoded command. Unknown fields, unknown types, trailing
// data and oversized input are all rejected.
func Decode(b []byte) (Command, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes", ErrDecode, len(b))
	}
	if len(b) > MaxCommandSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrDecode, len(b), MaxCommandSize)
	}
	c := newCommand(Type(b[0]))
	if c == nil {
		return nil, fmt.Errorf("%w: unknown type %d", ErrDecode, b[0])
	}
	dec := json.NewDecoder(bytes.NewReader(b[1:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%w: type %d: %v", ErrDecode, b[0], err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after type %d", ErrDecode, b[0])
	}
	if c.Time().IsZero() {
		return nil, fmt.Errorf("%w: type %d has no time", ErrDecode, b[0])
	}
	return c, nil
}
