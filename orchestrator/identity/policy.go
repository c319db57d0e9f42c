package identity

import (
	"errors"
	"fmt"
)

// ErrForbidden means the caller is authenticated but not allowed (403).
var ErrForbidden = errors.New("forbidden")

// Role ranks: admin ⇒ member ⇒ reader.
var roleRank = map[string]int{"reader": 1, "member": 2, "admin": 3}

// RoleAtLeast reports whether have implies need.
func RoleAtLeast(have, need string) bool {
	return roleRank[have] >= roleRank[need] && roleRank[need] > 0
}

// Scope says whose role an action is checked against.
type Scope int

const (
	// Public actions need no token.
	Public Scope = iota
	// Authenticated actions need any valid token.
	Authenticated
	// ProjectScope actions need the role on the token's project and act only
	// on that project's resources.
	ProjectScope
	// SystemScope actions need the role on the cluster's admin project.
	SystemScope
)

// Rule is one policy table entry.
type Rule struct {
	Scope Scope
	Role  string
}

// Action names an API operation.
type Action string

// Policy is the one table every API endpoint is checked against.
var Policy = map[Action]Rule{
	"auth:token:create": {Public, ""},
	"auth:token:show":   {Authenticated, ""},
	"auth:token:revoke": {Authenticated, ""},
	"auth:key:rotate":   {SystemScope, "admin"},
	"metrics:show":      {Public, ""},

	"project:create": {SystemScope, "admin"},
	"project:delete": {SystemScope, "admin"},
	"project:list":   {SystemScope, "reader"},
	"user:create":    {SystemScope, "admin"},
	"user:delete":    {SystemScope, "admin"},
	"user:list":      {SystemScope, "reader"},
	"role:assign":    {SystemScope, "admin"},
	"role:unassign":  {SystemScope, "admin"},
	"role:list":      {SystemScope, "reader"},
	"quota:set":      {SystemScope, "admin"},
	"quota:show":     {ProjectScope, "reader"},

	"flavor:create": {SystemScope, "admin"},
	"flavor:delete": {SystemScope, "admin"},
	"flavor:list":   {Authenticated, ""},

	"host:register":  {SystemScope, "admin"},
	"host:heartbeat": {SystemScope, "admin"},
	"host:update":    {SystemScope, "admin"},
	"host:delete":    {SystemScope, "admin"},
	"host:list":      {SystemScope, "reader"},

	"image:create":        {ProjectScope, "member"},
	"image:create:public": {SystemScope, "admin"},
	"image:delete":        {ProjectScope, "member"},
	"image:list":          {ProjectScope, "reader"},
	"image:download":      {ProjectScope, "reader"},

	"server-group:create": {ProjectScope, "member"},
	"server-group:delete": {ProjectScope, "member"},
	"server-group:list":   {ProjectScope, "reader"},

	"instance:create":    {ProjectScope, "member"},
	"instance:delete":    {ProjectScope, "member"},
	"instance:action":    {ProjectScope, "member"},
	"instance:list":      {ProjectScope, "reader"},
	"instance:set-state": {SystemScope, "admin"},
	// The serial console is the guest's keyboard: reading its log and
	// typing into it are a member's, as with Nova's console output.
	"instance:console": {ProjectScope, "member"},

	"network:create": {ProjectScope, "member"},
	"network:delete": {ProjectScope, "member"},
	"network:list":   {ProjectScope, "reader"},
	"port:host":      {SystemScope, "admin"},

	"cluster:members": {SystemScope, "reader"},
	"cluster:join":    {SystemScope, "admin"},
	"cluster:remove":  {SystemScope, "admin"},
	"cluster:blob":    {SystemScope, "admin"},
}

// Subject is an authenticated caller.
type Subject struct {
	Claims Claims
	// Role is the caller's role on its token's project ("" if none any more).
	Role string
	// System is true when the token's project is the admin project.
	System bool
}

// SystemAdmin reports whether the subject administers the whole cluster.
func (s *Subject) SystemAdmin() bool { return s.System && RoleAtLeast(s.Role, "admin") }

// Authorize checks subject (nil for anonymous) against the action's rule.
// For project-scoped actions on an existing resource, targetProject is the
// resource's project; a system admin may act on any project.
func Authorize(a Action, s *Subject, targetProject string) error {
	rule, ok := Policy[a]
	if !ok {
		return fmt.Errorf("action %q is not in the policy table: %w", a, ErrForbidden)
	}
	if rule.Scope == Public {
		return nil
	}
	if s == nil {
		return ErrTokenMalformed
	}
	switch rule.Scope {
	case Authenticated:
		return nil
	case SystemScope:
		if s.System && RoleAtLeast(s.Role, rule.Role) {
			return nil
		}
		return fmt.Errorf("%s needs the %s role on the admin project: %w", a, rule.Role, ErrForbidden)
	case ProjectScope:
		if !RoleAtLeast(s.Role, rule.Role) {
			return fmt.Errorf("%s needs the %s role: %w", a, rule.Role, ErrForbidden)
		}
		if targetProject != "" && targetProject != s.Claims.ProjectID && !s.SystemAdmin() {
			return fmt.Errorf("%s on another project: %w", a, ErrForbidden)
		}
		return nil
	}
	return ErrForbidden
}
