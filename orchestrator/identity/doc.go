// Package identity owns authentication and authorisation: password hashing,
// signed bearer tokens (keys come from the replicated state so every server
// validates locally), the role hierarchy and the single policy table every
// API call is checked against.
package identity
