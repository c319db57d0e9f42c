package state

import (
	"fmt"
	"regexp"
)

var (
	namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	idPattern   = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)
)

func checkName(kind, name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%s name %q must be 1-63 letters, digits, '.', '_' or '-': %w", kind, name, ErrInvalid)
	}
	return nil
}

func checkID(kind, id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%s id %q is malformed: %w", kind, id, ErrInvalid)
	}
	return nil
}
